"""Follows JSON documents that their writer rewrites whole (trainer_state.json, a status file).

The writer rewrites in place without an atomic rename, so a read can catch half a document.
Such a read is not an error: it is retried on the next change (every write produces one) or by
the caller's retry timer, and only a document that stays unparseable is reported, once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path

import aiofiles
import structlog

from tunewatch.daemon.events import SourceError
from tunewatch.daemon.sources.base import DocumentParser, FileOrigin, IncompleteDocument
from tunewatch.daemon.sources.file_access import (
    FileSignature,
    SourceFault,
    fault_from_os_error,
    open_regular,
    signature_of,
    stat_source,
)
from tunewatch.daemon.sources.tailer import TailBatch
from tunewatch.daemon.store import FileState
from tunewatch.daemon.text import storable_text

log = structlog.get_logger(__name__)

# Reads of the same unparseable content before it is reported as broken rather than half-written.
INCOMPLETE_READS_BEFORE_ERROR = 5
# A status file or trainer_state.json is read whole on every change; one larger than this is
# not a document a trainer wrote (a year of per-step history is about 100 MB).
MAX_DOCUMENT_BYTES = 256 << 20


class DocumentFollower:
    """Emits the new events of one logical document (possibly several files, e.g. checkpoints)."""

    def __init__(
        self,
        run: str,
        source: str,
        make_parser: Callable[[FileOrigin], DocumentParser],
        state: FileState,
    ) -> None:
        self.run = run
        self.source = source
        self.make_parser = make_parser
        self.state = state
        self._seen: dict[str, bytes] = {}  # path -> digest of the last content fully handled
        # Each file's signature when last fully handled: a rescan of an unchanged
        # checkpoint's trainer_state.json costs one stat, not a read and a hash.
        self.signatures: dict[Path, FileSignature] = {}
        self._incomplete: dict[str, tuple[bytes, int]] = {}  # path -> (digest, failed reads)

    def wants_retry(self) -> bool:
        """True while a document was caught mid-write and should be read again soon."""
        return bool(self._incomplete)

    async def read(self, path: Path) -> TailBatch | None:
        """The new events of the document at `path`, if it changed.

        Raises `SourceFault` when it cannot be read (permissions, not a regular file, too big).
        """
        key = storable_text(str(path))
        st = stat_source(path)
        if st is None:
            self._incomplete.pop(key, None)
            return None
        signature = signature_of(st)
        if self.signatures.get(path) == signature:
            return None
        if st.st_size > MAX_DOCUMENT_BYTES:
            raise SourceFault(
                "document_too_large",
                f"{st.st_size:,} bytes; documents over {MAX_DOCUMENT_BYTES:,} bytes are not read",
            )
        try:
            data = await self._read_whole(path)
        except FileNotFoundError:
            self._incomplete.pop(key, None)
            return None
        except OSError as exc:
            raise fault_from_os_error(exc) from exc
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if self._seen.get(key) == digest:
            return None
        origin = FileOrigin(run=self.run, source=self.source, path=str(path))
        try:
            parser = self.make_parser(origin)
            events, cursor = parser.parse(data, self.state.cursor, written=st.st_mtime)
        except IncompleteDocument as exc:
            return self._incomplete_read(origin, digest, str(exc))
        except Exception as exc:  # a parser bug: report this content once, read the next one
            log.exception("document parser failed", run=self.run, source=self.source)
            return self._broken(origin, digest, "parser_failed", f"{type(exc).__name__}: {exc}")
        self._incomplete.pop(key, None)
        self._seen[key] = digest
        self.signatures[path] = signature
        errors = sum(1 for e in events if type(e) is SourceError)
        self.state = dataclasses.replace(
            self.state, cursor=cursor, errors=self.state.errors + errors
        )
        return TailBatch(events, self.state)

    @staticmethod
    async def _read_whole(path: Path) -> bytes:
        fd, _st = await asyncio.to_thread(open_regular, path)
        async with aiofiles.open(fd, "rb") as fh:
            data: bytes = await fh.read(MAX_DOCUMENT_BYTES + 1)
        return data

    def _incomplete_read(self, origin: FileOrigin, digest: bytes, why: str) -> TailBatch | None:
        previous, count = self._incomplete.get(origin.location, (b"", 0))
        count = count + 1 if previous == digest else 1
        if count < INCOMPLETE_READS_BEFORE_ERROR:
            self._incomplete[origin.location] = (digest, count)
            return None
        # The same bytes failed to parse several times: not a write in progress but a broken file.
        message = f"not valid JSON after {count} reads: {why or 'truncated'}"
        return self._broken(origin, digest, "invalid_document", message)

    def _broken(self, origin: FileOrigin, digest: bytes, kind: str, message: str) -> TailBatch:
        """Report content that cannot be used, once: it is not read again until it changes."""
        self._incomplete.pop(origin.location, None)
        self._seen[origin.location] = digest
        self.state = dataclasses.replace(self.state, errors=self.state.errors + 1)
        error = SourceError(origin.run, origin.source, kind, message, origin.location)
        return TailBatch([error], self.state)
