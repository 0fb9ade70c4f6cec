"""The daemon's malloc settings: freed big buffers go back to the OS at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

RETAINED_AFTER_BIG_BUFFERS = textwrap.dedent(
    """
    import sys
    from tunewatch.daemon.memory import tune_malloc
    if sys.argv[1] == "tuned":
        assert tune_malloc()
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096
    start = rss()
    for _ in range(3):
        buffer = b"x" * (8 << 20)  # a whole trainer_state.json read at once
        del buffer
    print((rss() - start) >> 20)
    """
)


def retained_mib(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", RETAINED_AFTER_BIG_BUFFERS, mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_freed_big_buffers_are_returned_to_the_os() -> None:
    assert retained_mib("tuned") < 2


def test_without_the_settings_glibc_keeps_them() -> None:
    """What the settings are for: glibc's default raises its mmap threshold and keeps 8 MiB."""
    assert retained_mib("default") >= 7
