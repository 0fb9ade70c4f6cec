"""`tunewatch run` as a real process against faults: a second daemon, a full disk, an unreadable
file, a FIFO, an unusable state directory. Each must leave the healthy runs recorded, say what
is wrong, and heal by itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.daemon_process import DaemonProcess, metric_steps, without_file_permission_override
from fixtures.notification_server import NotificationServer
from fixtures.tmpfs import tmpfs


def lines(steps: range) -> str:
    return "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps)


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def make_run(root: Path, name: str = "run-a", steps: range = range(1, 4)) -> Path:
    run = root / name
    run.mkdir(parents=True)
    append(run / "train.jsonl", lines(steps))
    return run


def test_a_second_daemon_on_one_state_dir_exits_2_and_readers_keep_working(
    tmp_path: Path,
) -> None:
    run = make_run(tmp_path)
    with DaemonProcess(tmp_path) as first:
        first.start(str(run))
        assert first.proc is not None
        second = first.cli("run", "--no-notifications", str(run), check=False)
        assert second.returncode == 2
        assert f"another tunewatch (pid {first.proc.pid}) is using" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.run_status("run-a") is not None  # a reader works alongside
        append(run / "train.jsonl", lines(range(4, 6)))
        first.wait_for(lambda: list(metric_steps(first.db)) == [1, 2, 3, 4, 5], what="lines")
        assert first.stop() == 0


def test_two_daemons_started_together_one_runs_and_the_other_exits_2_cleanly(
    tmp_path: Path,
) -> None:
    run = make_run(tmp_path)
    shared = {"XDG_STATE_HOME": str(tmp_path / "state")}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = DaemonProcess(tmp_path / "a", extra_env=shared)
    b = DaemonProcess(tmp_path / "b", extra_env=shared)
    with a, b:
        a.start(str(run), wait_ready=False)
        b.start(str(run), wait_ready=False)
        assert a.proc is not None and b.proc is not None
        deadline = time.monotonic() + 60
        while a.proc.poll() is None and b.proc.poll() is None:
            assert time.monotonic() < deadline, "neither daemon gave way"
            time.sleep(0.05)
        loser, winner = (a, b) if a.proc.poll() is not None else (b, a)
        assert loser.stop() == 2
        assert "another tunewatch" in loser.log()
        winner.wait_message("READY=1")
        assert winner.stop() == 0
    assert "Traceback" not in a.log() + b.log()
    assert list(metric_steps(a.db)) == [1, 2, 3]


def test_an_unusable_state_dir_is_one_line_and_exit_2_for_every_command(
    tmp_path: Path,
) -> None:
    run = make_run(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    daemon = DaemonProcess(tmp_path, extra_env={"XDG_STATE_HOME": str(blocker / "state")})
    for command in (["run", "--once", str(run)], ["status"], ["events"]):
        result = daemon.cli(*command, check=False)
        assert result.returncode == 2, command
        assert result.stderr.count("\n") == 1 and "a-file" in result.stderr, result.stderr
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    daemon = DaemonProcess(
        tmp_path,
        extra_env={"XDG_STATE_HOME": str(read_only)},
        wrapper=without_file_permission_override(),
    )
    result = daemon.cli("run", "--once", str(run), check=False)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Permission denied" in result.stderr


def test_hostile_files_neither_hang_start_nor_stop_and_a_restart_is_clean(
    tmp_path: Path,
) -> None:
    run = make_run(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    os.mkfifo(bad / "f.jsonl")
    (bad / "z.jsonl").symlink_to("/dev/zero")
    (bad / "loop.jsonl").symlink_to("loop.jsonl")
    append(bad / "m.jsonl", '{"current_steps": 4, "\\ud800": 1.0}\n')
    (bad / "training_status.json").write_text('{"status": "train\\ud800ing", "step": 3}')
    with DaemonProcess(tmp_path) as daemon:
        # The second start meets the same input.
        for starts, (first, last) in enumerate(((4, 19), (20, 29)), start=1):
            daemon.start(str(run), str(bad))
            append(run / "train.jsonl", lines(range(first, last + 1)))
            daemon.wait_for(
                lambda last=last: (
                    list(metric_steps(daemon.db, "train.jsonl"))  # type: ignore[misc]
                    == list(range(1, last + 1))
                ),
                what="the healthy run's lines",
            )
            # (The three bad files are reported in their own time: on a busy machine the
            # healthy lines can be recorded first.)
            daemon.wait_for(
                lambda starts=starts: (  # type: ignore[misc]
                    len(daemon.events("--kind", "source_unreadable")) >= 3 * starts
                ),
                what="the bad files reported",
            )
            started = time.monotonic()
            assert daemon.stop(timeout_s=15) == 0
            assert time.monotonic() - started < 10
        unreadable = daemon.events("--kind", "source_unreadable")
    # Once per daemon run (the FIFO, /dev/zero, the loop), not once per retry.
    assert sorted(e["data"]["kind"] for e in unreadable) == sorted(
        ["not_a_regular_file", "not_a_regular_file", "symlink_loop"] * 2
    )
    assert daemon.run_status("bad") is not None
    assert "Traceback" not in daemon.log()


def test_an_unreadable_file_is_reported_then_read_once_it_is_allowed(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    secret = run / "secret.jsonl"
    append(secret, lines(range(100, 103)))
    secret.chmod(0)
    with DaemonProcess(tmp_path, wrapper=without_file_permission_override()) as daemon:
        daemon.start(str(run))
        (report,) = daemon.events("--kind", "source_unreadable")
        assert report["data"]["kind"] == "permission_denied"
        assert "secret.jsonl" in report["summary"]
        append(run / "train.jsonl", lines(range(4, 6)))
        daemon.wait_for(
            lambda: list(metric_steps(daemon.db, "train.jsonl")) == [1, 2, 3, 4, 5],
            what="the readable file's new lines",
        )
        secret.chmod(0o644)
        daemon.wait_for(
            lambda: list(metric_steps(daemon.db, "secret.jsonl")) == [100, 101, 102],
            timeout_s=30,
            what="the file, once readable",
        )
        (readable,) = daemon.events("--kind", "source_readable")
        assert "secret.jsonl" in readable["summary"]
        assert daemon.stop() == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs that the test can fill; skipped where mounting is not allowed."""
    with tmpfs(tmp_path / "disk", "4m") as mount:
        yield mount


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_stops_recording_visibly_and_it_resumes_when_space_is_freed(
    tmp_path: Path, small_disk: Path, notification_server: NotificationServer
) -> None:
    run = make_run(tmp_path)
    daemon = DaemonProcess(tmp_path, extra_env={"XDG_STATE_HOME": str(small_disk)})
    with daemon:
        daemon.start(str(run), notifications=True)
        filler = fill(small_disk)
        wide = {f"metric_{i}": float(i) for i in range(100)}
        append(
            run / "train.jsonl",
            "".join(json.dumps({"step": s, **wide}) + "\n" for s in range(4, 400)),
        )
        daemon.wait_message_matching(lambda m: "CANNOT RECORD" in m, timeout_s=30)
        status = daemon.status()
        assert status["daemon"]["recording_failure"].startswith("database or disk is full")
        assert list(metric_steps(daemon.db)) == [1, 2, 3]
        filler.unlink()
        daemon.wait_for(
            lambda: list(metric_steps(daemon.db)) == list(range(1, 400)),
            timeout_s=90,
            what="the lines written while the disk was full",
        )
        (resumed,) = daemon.events("--kind", "recording_resumed")
        assert "database or disk is full" in resumed["summary"]
        assert daemon.status()["daemon"]["recording_failure"] is None
        assert daemon.stop() == 0
    received = notification_server.received(2)
    critical = [r for r in received if r.urgency == "CRITICAL"]
    assert critical and critical[0].body.startswith("tunewatch cannot record: database or disk")
    assert any(r.summary == "tunewatch is recording again" for r in received)


def test_sigterm_while_a_store_call_hangs_still_exits(tmp_path: Path) -> None:
    """A thread stuck in a blocking call must not keep the process alive after SIGTERM."""
    run = make_run(tmp_path)
    script = tmp_path / "hang.py"
    script.write_text(
        "import sys, threading, time\n"
        "from tunewatch.daemon.cli import main\n"
        "import tunewatch.daemon.store as store\n"
        "real = store.Store.plugin_get\n"
        "def hang(self, *a):\n"
        "    if threading.current_thread().name.startswith('tunewatch-store'):\n"
        "        time.sleep(3600)\n"
        "    return real(self, *a)\n"
        "store.Store.plugin_get = hang\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    proc = subprocess.Popen(
        [sys.executable, str(script), "run", "--no-notifications", str(run)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the daemon did not exit after SIGTERM") from None
    assert "Traceback" not in err


def test_a_plugin_that_dies_while_running_is_reported_at_once(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    plugins = tmp_path / "plugins"
    (plugins / "twboom").mkdir(parents=True)
    (plugins / "twboom" / "__init__.py").write_text(
        "import asyncio\n"
        "class Boom:\n"
        "    name = 'boom'\n"
        "    def __init__(self, ctx): self.ctx = ctx\n"
        "    async def start(self): self.task = self.ctx.spawn(self.work(), name='work')\n"
        "    async def work(self):\n"
        "        await asyncio.sleep(0.2)\n"
        "        raise RuntimeError('lost its database')\n"
        "    async def stop(self): self.task.cancel()\n"
    )
    dist = plugins / "twboom-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: twboom\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[tunewatch.plugins]\nboom = twboom:Boom\n")
    path = os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])
    with DaemonProcess(tmp_path, extra_env={"PYTHONPATH": path}) as daemon:
        daemon.start(str(run))
        daemon.wait_for(lambda: "lost its database" in daemon.log(), what="the failure logged")
        assert "Traceback" in daemon.log()  # logged with its traceback, while running
        listed = daemon.cli("plugins", check=False)
        assert listed.returncode == 1
        assert "boom\t" in listed.stdout and "FAILED in the running daemon" in listed.stdout
        assert "RuntimeError: lost its database" in listed.stdout
        state = daemon.status()["daemon"]["plugins"]
        assert state["boom"].startswith("failed") and state["anomaly"] == "running"
        append(run / "train.jsonl", lines(range(4, 6)))  # the rest goes on
        daemon.wait_for(lambda: list(metric_steps(daemon.db)) == [1, 2, 3, 4, 5], what="lines")
        assert daemon.stop() == 0


def test_a_run_folder_whose_name_is_not_utf8_neither_crashes_start_nor_status(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    make_run(runs, "good")
    odd = Path(os.fsdecode(os.fsencode(runs) + b"/r\xff\xfe"))
    make_run(odd.parent, odd.name)
    daemon = DaemonProcess(tmp_path)
    result = daemon.cli("run", "--once", "--no-notifications", str(runs / "*"), check=False)
    assert result.returncode == 0, result.stderr
    names = sorted(r["name"] for r in daemon.status()["runs"])
    assert names == ["good", "r\\udcff\\udcfe"]
    text = daemon.cli("status").stdout
    assert "r\\udcff\\udcfe" in text


def test_hundreds_of_runs_fit_in_a_small_open_file_limit(tmp_path: Path) -> None:
    """Every followed file used to keep a descriptor: 1,500 runs broke systemd's 1,024."""
    runs = tmp_path / "runs"
    for i in range(300):
        make_run(runs, f"run-{i:03d}", steps=range(1, 3))
    limit = ["bash", "-c", 'ulimit -n 128 && exec "$0" "$@"']
    with DaemonProcess(tmp_path, wrapper=limit) as daemon:
        daemon.start(str(runs / "*"))
        assert daemon.proc is not None
        assert len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) < 64
        append(runs / "run-299" / "train.jsonl", lines(range(3, 5)))
        daemon.wait_for(
            lambda: len(metric_steps(daemon.db)) == 300 * 2 + 2, what="every line, then two more"
        )
        assert daemon.stop() == 0
    assert "Too many open files" not in daemon.log()
