"""Follows one append-only log file the way Filebeat and Fluent Bit do, and parses what it adds.

A file is identified by (device, inode) plus a fingerprint of its first bytes. Rotation
(rename + create) drains the old file before switching; copytruncate and truncation (size below
the offset) restart from the top; a line still being written is held until its newline arrives;
an oversized line is reported and skipped. Positions are handed back as `FileState` and only
become durable when the store commits them together with the events they produced.

Each `read()` is one trip to a worker thread that does all of its system calls (stat, open,
seek, read) and parses what it read: with one trip per call, as aiofiles makes, a line
appended to a log cost about ten thread hand-offs, which dominated live ingest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

from tunewatch.daemon.events import RunEvent, SourceError
from tunewatch.daemon.sources.base import FileOrigin, LineParser, WrittenClock
from tunewatch.daemon.sources.file_access import (
    SourceFault,
    fault_from_os_error,
    open_regular,
    stat_source,
)
from tunewatch.daemon.store import FileState

FINGERPRINT_BYTES = 1024
# About 5,000 typical metric lines per batch: large enough to amortise a commit, small enough
# that a catch-up keeps few events in memory at once (they are held until their commit).
READ_CHUNK_BYTES = 1 << 20

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TailBatch:
    """Events parsed from newly appended lines and the position to commit with them.

    `at_end` says the read reached the end of the file as it was then: there is no need to
    ask again until the file changes.
    """

    events: list[RunEvent]
    state: FileState
    at_end: bool = False


class LogTailer:
    """Reads what was appended to one file since the committed position."""

    def __init__(
        self,
        origin: FileOrigin,
        parser: LineParser,
        state: FileState,
        *,
        max_line_bytes: int,
        clock: WrittenClock | None = None,
    ) -> None:
        """`clock` is the parser's: each read tells it the file's mtime."""
        self.origin = origin
        self.clock = clock
        self.path = Path(origin.path)
        self.parser = parser
        self.state = state
        self.max_line_bytes = max_line_bytes
        self.log = log.bind(run=origin.run, source=origin.source)
        self._fh: BinaryIO | None = None  # the file being read (used in a worker thread only)
        self._identity: tuple[int, int] | None = None
        self._partial = b""  # bytes after `state.offset` read but not yet ended by a newline
        self._skipping = False  # inside an oversized line, discarding until its newline
        self._skip_rows = 0  # rows already delivered before a rewrite (see rewrite_keeps_rows)
        self._header_pending = False
        self.last_stat: os.stat_result | None = None  # the file's stat at the last read

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._identity = None

    @property
    def is_open(self) -> bool:
        return self._fh is not None

    def backlog(self) -> int:
        """Bytes written after the committed position, as far as one stat tells (0 if unknown)."""
        try:
            return max(os.stat(self.path).st_size - self.state.offset, 0)
        except OSError:
            return 0

    async def read(self, max_bytes: int = READ_CHUNK_BYTES) -> TailBatch | None:
        """Parse up to about `max_bytes` of new data; None when there is nothing new.

        Raises `SourceFault` when the file cannot be read (permissions, not a regular file...).
        """
        return await asyncio.to_thread(self.read_now, max_bytes)

    def read_now(self, max_bytes: int = READ_CHUNK_BYTES) -> TailBatch | None:
        """`read`, blocking: for a worker thread."""
        try:
            return self._read(max_bytes)
        except OSError as exc:
            raise fault_from_os_error(exc) from exc

    def _read(self, max_bytes: int) -> TailBatch | None:
        fault: SourceFault | None = None
        try:
            st = stat_source(self.path)
        except SourceFault as exc:  # e.g. replaced by a directory: finish the old file first
            st, fault = None, exc
        self.last_stat = st
        if self.clock is not None and st is not None:
            self.clock.mtime = st.st_mtime
        if self._fh is not None and (st is None or self._identity != (st.st_dev, st.st_ino)):
            # Renamed away (rotation) or deleted: finish the old file before anything else.
            batch = self._read_available(max_bytes)
            if batch is not None:
                return dataclasses.replace(batch, at_end=False)
            self.close_now()
        if fault is not None:
            raise fault
        if st is None:
            return None
        if self._fh is None:
            if not self._open():
                return None
        elif st.st_size < self.state.offset + len(self._partial):
            self._restart("truncated")
        elif self.parser.rewrite_keeps_rows and not self._fingerprint_matches():
            self._restart("rewritten")
        return self._read_available(max_bytes)

    def _open(self) -> bool:
        """Open the file now at the path and seek to where reading resumes; False if it is gone."""
        try:
            fd, st = open_regular(self.path)
        except FileNotFoundError:
            return False
        self._fh = open(fd, "rb")  # noqa: SIM115 - held open across reads, closed by close_now
        self._identity = (st.st_dev, st.st_ino)
        self._partial = b""
        self._skipping = False
        same_inode = (self.state.dev, self.state.ino) == self._identity
        if (
            self.state.offset
            and (same_inode or self.state.fingerprint)
            and st.st_size >= self.state.offset
            and self._fingerprint_matches()
        ):
            self._resume_header()
            self._fh.seek(self.state.offset)
            return True
        if self.state.offset or self.state.line_no:
            self.log.info("log file replaced, reading from the start", path=self.origin.location)
        self._skip_rows = 0
        self.state = dataclasses.replace(
            self.state, dev=st.st_dev, ino=st.st_ino, fingerprint=b"", offset=0, line_no=0
        )
        self._fh.seek(0)
        return True

    def _restart(self, why: str) -> None:
        assert self._fh is not None
        self.log.info(f"log file {why}, reading from the start", path=self.origin.location)
        if self.parser.rewrite_keeps_rows:
            self._skip_rows = max(self.state.line_no - self.parser.header_lines, 0)
        self._partial = b""
        self._skipping = False
        self.state = dataclasses.replace(self.state, fingerprint=b"", offset=0, line_no=0)
        self._fh.seek(0)

    def _fingerprint_matches(self) -> bool:
        assert self._fh is not None
        want = self.state.fingerprint
        if not want:
            return True
        self._fh.seek(0)
        head = self._fh.read(len(want))
        self._fh.seek(self.state.offset + len(self._partial))
        return bool(head == want)

    def _resume_header(self) -> None:
        """Re-feed header lines (a CSV header) to a fresh parser when resuming mid-file."""
        assert self._fh is not None
        if not self.parser.header_lines:
            return
        self._fh.seek(0)
        lines = []
        for _ in range(self.parser.header_lines):
            line = self._fh.readline()
            lines.append(line.rstrip(b"\r\n"))
        self.parser.parse(lines, 1)

    def _read_available(self, max_bytes: int) -> TailBatch | None:
        """Read and parse what follows; the framing (lines here, records in `TfRecordTailer`).

        Keeps `state.offset + len(self._partial)` at the read position of the file.
        """
        fh = self._fh
        if fh is None:
            return None
        chunk = fh.read(max_bytes)
        if not chunk:
            return None
        at_end = len(chunk) < max_bytes
        events: list[RunEvent] = []
        offset = self.state.offset
        line_no = self.state.line_no
        errors = self.state.errors
        if self._skipping:  # then nothing is held in _partial
            newline = chunk.find(b"\n")
            if newline < 0:
                self.state = dataclasses.replace(self.state, offset=offset + len(chunk))
                return TailBatch([], self.state, at_end)
            self._skipping = False
            chunk = chunk[newline + 1 :]
            offset += newline + 1
            line_no += 1
        end = chunk.rfind(b"\n")
        if end < 0:
            data = self._partial + chunk
            self._partial = data
            if len(data) > self.max_line_bytes:
                events.append(self._too_long(line_no + 1, len(data)))
                errors += 1
                self._partial = b""
                self._skipping = True
                offset += len(data)
            self.state = dataclasses.replace(self.state, offset=offset, errors=errors)
            self._update_fingerprint()
            return TailBatch(events, self.state, at_end)
        # Split the chunk where it lies and prefix the held partial line to the first line:
        # joining them first would copy the whole chunk (a MiB) once more per read.
        lines = chunk.split(b"\n")
        complete_bytes = len(self._partial) + end + 1
        lines[0] = self._partial + lines[0]
        self._partial = lines.pop()  # what follows the last newline
        offset += complete_bytes
        if b"\r" in chunk or lines[0].endswith(b"\r"):  # Windows line endings: drop \r of \r\n
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        first_line_no = line_no + 1
        line_no += len(lines)
        if len(self._partial) > self.max_line_bytes:
            events_too_long = [self._too_long(line_no + 1, len(self._partial))]
            offset += len(self._partial)
            self._partial = b""
            self._skipping = True
        else:
            events_too_long = []
        if complete_bytes > self.max_line_bytes:
            events.extend(self._blank_long_lines(lines, first_line_no))
        events.extend(self._parse_contained(lines, first_line_no))
        events.extend(events_too_long)
        errors += sum(1 for e in events if type(e) is SourceError)
        self.state = dataclasses.replace(self.state, offset=offset, line_no=line_no, errors=errors)
        self._update_fingerprint()
        return TailBatch(events, self.state, at_end)

    def _parse_contained(self, lines: list[bytes], first_line_no: int) -> list[RunEvent]:
        """The parser's events; a parser that raises costs these lines, never the file."""
        try:
            return self._parse(lines, first_line_no)
        except Exception as exc:  # a parser bug must not stop this file for good
            self.log.exception("parser failed; its lines are skipped", lines=len(lines))
            return [
                SourceError(
                    run=self.origin.run,
                    source=self.origin.source,
                    kind="parser_failed",
                    message=f"{len(lines):,} line(s) skipped: {type(exc).__name__}: {exc}",
                    location=self.origin.at(first_line_no),
                )
            ]

    def _parse(self, lines: list[bytes], first_line_no: int) -> list[RunEvent]:
        header = self.parser.header_lines
        start = 0
        # After a rewrite that kept earlier rows (Lightning growing its CSV header), re-feed the
        # header and deliver only the rows that were not delivered before.
        while start < len(lines) and first_line_no + start <= header:
            start += 1
        if self._skip_rows and start < len(lines):
            skipped = min(self._skip_rows, len(lines) - start)
            self._skip_rows -= skipped
            if start:
                self.parser.parse(lines[:start], first_line_no)
            start += skipped
            if start == len(lines):
                return []
            return self.parser.parse(lines[start:], first_line_no + start)
        return self.parser.parse(lines, first_line_no)

    def _update_fingerprint(self) -> None:
        if len(self.state.fingerprint) >= FINGERPRINT_BYTES or self._fh is None:
            return
        # The fingerprint grows with the file up to FINGERPRINT_BYTES, so it is read only while
        # the file is young.
        position = self.state.offset + len(self._partial)
        self._fh.seek(0)
        head = self._fh.read(min(self.state.offset, FINGERPRINT_BYTES))
        self._fh.seek(position)
        self.state = dataclasses.replace(self.state, fingerprint=head)

    def _blank_long_lines(self, lines: list[bytes], first_line_no: int) -> list[RunEvent]:
        # Blanked rather than removed so the parser's line numbers stay right.
        found: list[RunEvent] = []
        for i, line in enumerate(lines):
            if len(line) > self.max_line_bytes:
                found.append(self._too_long(first_line_no + i, len(line)))
                lines[i] = b""
        return found

    def _too_long(self, line_no: int, size: int) -> SourceError:
        return SourceError(
            run=self.origin.run,
            source=self.origin.source,
            kind="line_too_long",
            message=(
                f"line longer than {self.max_line_bytes:,} bytes ({size:,}+ bytes); skipped. "
                "Raise [sources] max_line_bytes if this is real data."
            ),
            location=self.origin.at(line_no),
        )
