"""Opening a source file without ever blocking on it, and saying why one cannot be read.

Only regular files are read. A FIFO named like a log would block `open()` until a writer
appears, and a symlink to a device (`/dev/zero`) never ends; both are refused before a byte is
read. Every reason a file cannot be read becomes a `SourceFault` with a kind and a message a
person can act on, so the caller can contain it to that file and retry later.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

# Open flags: never block (a FIFO opens at once without a writer), never become a controlling
# terminal (a TTY device named like a log), never leak into child processes.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


# What a file looked like when last read to its end: (device, inode, size, mtime in ns). The
# same signature later means nothing was written since, so the file need not even be opened.
FileSignature = tuple[int, int, int, int]


def signature_of(st: os.stat_result) -> FileSignature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class SourceFault(Exception):
    """One source file cannot be read now; the rest of the run goes on.

    `kind` is a short stable name (`permission_denied`, `not_a_regular_file`...) and the
    message says what is wrong and what to do.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def file_type(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def require_regular(st: os.stat_result) -> None:
    """Raise `SourceFault` unless `st` describes a regular file."""
    if not stat.S_ISREG(st.st_mode):
        raise SourceFault(
            "not_a_regular_file",
            f"is {file_type(st.st_mode)}, not a regular file; only regular files are read",
        )


def fault_from_os_error(exc: OSError) -> SourceFault:
    """The `SourceFault` for an error raised while opening, reading or stating a source."""
    code = exc.errno
    reason = os.strerror(code) if code is not None else str(exc)
    if code in (errno.EACCES, errno.EPERM):
        return SourceFault(
            "permission_denied",
            f"cannot read: {reason}; let the user running tunewatch read it (chmod/chown)",
        )
    if code == errno.ELOOP:
        return SourceFault("symlink_loop", f"cannot open: {reason} (a symlink loop)")
    if code in (errno.ENXIO, errno.ENODEV):
        return SourceFault("not_a_regular_file", f"cannot open: {reason}; not a regular file")
    if code == errno.EISDIR:
        return SourceFault("not_a_regular_file", "is a directory, not a regular file")
    return SourceFault("unreadable", f"cannot read: {reason}")


def open_regular(path: Path) -> tuple[int, os.stat_result]:
    """Open `path` for reading if it is a regular file: (descriptor, its stat).

    Raises FileNotFoundError when there is no such file (not a fault: it may come later),
    and `SourceFault` for everything else.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise fault_from_os_error(exc) from exc
    try:
        st = os.fstat(fd)
        require_regular(st)
    except OSError as exc:
        os.close(fd)
        raise fault_from_os_error(exc) from exc
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def stat_source(path: Path) -> os.stat_result | None:
    """`stat` of a source file, None when it does not exist; a `SourceFault` for the rest."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise fault_from_os_error(exc) from exc
    require_regular(st)
    return st
