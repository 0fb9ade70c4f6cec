"""TFRecord framing (TensorBoard event files), and the tailer that follows such a file.

A record is `uint64 length | masked CRC32C of length | data | masked CRC32C of data`. The
tailer is `LogTailer` with records in place of lines: same identity, fingerprint, rotation and
resume rules, and the committed offset is always the end of the last complete record. A record
still being written is held until complete; a damaged one is reported and skipped, and a damaged
length (which loses the framing) makes the reader look for the next intact record.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

import google_crc32c

from tunewatch.daemon.events import RunEvent, SourceError
from tunewatch.daemon.sources.tailer import LogTailer, TailBatch

HEADER_BYTES = 12  # uint64 length + its masked CRC32C
FOOTER_BYTES = 4  # masked CRC32C of the data
_MASK_DELTA = 0xA282EAD8
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_HEADER = struct.Struct("<QI")


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC32C rotated and offset so that data holding CRCs stays checkable."""
    crc: int = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """`data` as one TFRecord (tests and the benchmark write files with it)."""
    length = _LENGTH.pack(len(data))
    return b"".join(
        (length, _CRC.pack(masked_crc32c(length)), data, _CRC.pack(masked_crc32c(data)))
    )


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes that were not an intact record: where they start in the buffer and how many."""

    at: int
    size: int
    kind: str  # "record_crc_mismatch" (framing kept) or "framing_lost" (skipped to resync)


@dataclass(frozen=True, slots=True)
class Framed:
    """What `split_records` found in a buffer.

    `consumed` bytes are dealt with (records and damage); the rest is an incomplete record to
    hold. `oversized` is (offset, length) of a record longer than allowed, where splitting
    stopped: the caller skips it without holding it in memory.
    """

    records: list[bytes]
    damage: list[Damage]
    consumed: int
    oversized: tuple[int, int] | None = None


def split_records(buf: bytes, max_record_bytes: int) -> Framed:
    """The complete records at the start of `buf`; never raises, whatever the bytes."""
    records: list[bytes] = []
    damage: list[Damage] = []
    size = len(buf)
    pos = 0
    lost_at = -1  # start of the bytes skipped while looking for intact framing, or -1
    # The hot loop of a catch-up (a million records): CRCs masked inline, names bound locally.
    crc32c = google_crc32c.value
    header = _HEADER.unpack_from
    footer = _CRC.unpack_from
    while size - pos >= HEADER_BYTES:
        length, length_crc = header(buf, pos)
        crc = crc32c(buf[pos : pos + 8])
        if (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF != length_crc:
            if lost_at < 0:
                lost_at = pos
            pos += 1
            continue
        if length > max_record_bytes:
            if lost_at >= 0:
                damage.append(Damage(lost_at, pos - lost_at, "framing_lost"))
            return Framed(records, damage, pos, (pos, length))
        end = pos + HEADER_BYTES + length + FOOTER_BYTES
        if end > size:
            break  # being written: held until complete
        data = buf[pos + HEADER_BYTES : end - FOOTER_BYTES]
        crc = crc32c(data)
        if (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF != footer(buf, end - 4)[0]:
            if lost_at >= 0:  # most likely a chance match inside damaged bytes: look on
                pos += 1
                continue
            damage.append(Damage(pos, end - pos, "record_crc_mismatch"))
            pos = end
            continue
        if lost_at >= 0:
            damage.append(Damage(lost_at, pos - lost_at, "framing_lost"))
            lost_at = -1
        records.append(data)
        pos = end
    if lost_at >= 0:
        damage.append(Damage(lost_at, pos - lost_at, "framing_lost"))
    return Framed(records, damage, pos)


_DAMAGE_MESSAGES = {
    "record_crc_mismatch": "a record's checksum does not match its data ({size:,} bytes); skipped",
    "framing_lost": (
        "{size:,} damaged bytes (no intact record header); skipped to the next intact record"
    ),
}


class TfRecordTailer(LogTailer):
    """Reads the records appended to one TFRecord file; its parser gets record payloads.

    `max_line_bytes` bounds a record: a longer one (an image or a graph, never a scalar) is
    skipped without being read into memory.
    """

    def _read_available(self, max_bytes: int) -> TailBatch | None:
        fh = self._fh
        offset_before = self.state.offset
        if fh is None or not self._skip_oversized(fh):
            return None
        chunk = fh.read(max_bytes)
        if not chunk:  # a skipped record is progress to commit too
            skipped = self.state.offset != offset_before
            return TailBatch([], self.state, at_end=True) if skipped else None
        at_end = len(chunk) < max_bytes
        buf = self._partial + chunk if self._partial else chunk
        framed = split_records(buf, self.max_line_bytes)
        start = self.state.offset
        consumed = framed.consumed
        self._partial = buf[consumed:]
        if framed.oversized is not None:
            # Hold only its header and read on after it: `_skip_oversized` skips the rest once
            # it is all written.
            self._partial = buf[consumed : consumed + HEADER_BYTES]
            fh.seek(start + consumed + HEADER_BYTES)
            at_end = False
        first_record_no = self.state.line_no + 1
        events: list[RunEvent] = []
        if framed.records:
            events.extend(self._parse_contained(framed.records, first_record_no))
        events.extend(self._damage_error(start, d) for d in framed.damage)
        damaged_records = sum(1 for d in framed.damage if d.kind == "record_crc_mismatch")
        self._advance(consumed, len(framed.records) + damaged_records, events)
        return TailBatch(events, self.state, at_end)

    def _skip_oversized(self, fh: BinaryIO) -> bool:
        """Skip a held oversized record once it is complete; False while it is being written."""
        if len(self._partial) != HEADER_BYTES:
            return True
        oversized = split_records(self._partial, self.max_line_bytes).oversized
        if oversized is None:
            return True
        end = self.state.offset + HEADER_BYTES + oversized[1] + FOOTER_BYTES
        if os.fstat(fh.fileno()).st_size < end:
            return False
        fh.seek(end)
        self._partial = b""
        self._advance(end - self.state.offset, 1, [])
        return True

    def _advance(self, consumed: int, records: int, events: list[RunEvent]) -> None:
        self.state = dataclasses.replace(
            self.state,
            offset=self.state.offset + consumed,
            line_no=self.state.line_no + records,
            errors=self.state.errors + sum(1 for e in events if type(e) is SourceError),
        )
        self._update_fingerprint()

    def _damage_error(self, start: int, damage: Damage) -> SourceError:
        origin = self.origin
        return SourceError(
            run=origin.run,
            source=origin.source,
            kind=damage.kind,
            message=_DAMAGE_MESSAGES[damage.kind].format(size=damage.size),
            location=f"{origin.location}:byte {start + damage.at}",
        )
