"""The `tunewatch` command line: status and events output, filters, exit codes, install-service."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from fixtures.daemon_process import DaemonProcess

from tunewatch.daemon.cli import main, parse_duration_s
from tunewatch.daemon.events import (
    AnomalyDetected,
    BestModelFound,
    MetricsLogged,
    ResourceSample,
    SourceError,
    StatusChanged,
)
from tunewatch.daemon.store import Store


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def fill(home: Path) -> None:
    store = Store(home / "state" / "tunewatch" / "state.db")
    a = store.ensure_run(str(home / "run-a"), "run-a")
    b = store.ensure_run(str(home / "run-b"), "run-b")
    now = time.time()
    store.commit_batch(
        a,
        [
            StatusChanged(run="run-a", status="training", source="s", total_steps=37_487),
            MetricsLogged(
                run="run-a",
                step=17_600,
                metrics={"loss": 0.75, "accuracy": 0.597},
                source="log.jsonl",
                time=now - 120,
            ),
            MetricsLogged(
                run="run-a",
                step=17_601,
                metrics={"loss": 0.7489},
                source="log.jsonl",
                time=now - 60,
            ),
            SourceError(
                run="run-a",
                source="log.jsonl",
                kind="invalid_json",
                message="oops",
                location="log.jsonl:9",
                time=now - 3 * 86400,
            ),
        ],
        None,
    )
    store.commit_batch(
        b, [MetricsLogged(run="run-b", step=5, metrics={"loss": 2.0}, source="x")], None
    )
    store.record(
        AnomalyDetected(
            run="run-a",
            step=17_500,
            kind="loss_spike",
            severity="critical",
            metric="loss",
            value=3.2,
            expected=0.76,
            detail="",
            time=now - 3600,
        )
    )
    store.record(BestModelFound(run="run-b", step=5, metric="loss", value=2.0, checkpoint=None))
    store.record(
        ResourceSample(
            disk_path="/",
            disk_used_fraction=0.5,
            disk_free_bytes=2**34,
            memory_used_fraction=0.2,
            load_1m=0.3,
        )
    )
    store.close()


def test_status_shows_where_each_run_stands(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(home)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "run-a" in out and "run-b" in out
    assert "step 17,601 / 37,487 (47.0%)" in out
    assert "loss           0.7489" in out
    assert "accuracy       59.7%" in out
    assert "last metric    60 s ago" in out or "last metric    1 min ago" in out
    assert "source errors  1 (last: invalid_json at log.jsonl:9: oops)" in out


def test_status_json_is_machine_readable(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(home)
    assert main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    run_a = next(r for r in data["runs"] if r["name"] == "run-a")
    assert run_a["step"] == 17_601
    assert run_a["total_steps"] == 37_487
    assert run_a["loss"] == 0.7489
    assert run_a["accuracy"] == 0.597
    assert run_a["source_errors"] == 1
    assert 50 < run_a["seconds_since_last_metric"] < 600


def test_events_lists_history_oldest_first_without_resource_samples(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(home)
    assert main(["events"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines] == [
        "source_error",
        "anomaly",
        "status",
        "best_model",
    ]
    assert "loss_spike at step 17,500: loss 3.2000 (expected 0.7600)" in lines[1]


def test_events_filters_by_run_kind_and_age(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(home)
    main(["events", "--json", "--since", "24h"])
    kinds = [json.loads(line)["kind"] for line in capsys.readouterr().out.splitlines()]
    assert "source_error" not in kinds and "anomaly" in kinds
    main(["events", "--json", "--run", "run-b"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["run"], r["kind"]) for r in rows] == [("run-b", "best_model")]
    main(["events", "--json", "--kind", "resources"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in rows] == ["resources"]
    assert rows[0]["data"]["disk_free_bytes"] == 2**34


def test_reading_before_the_daemon_ever_ran_says_so(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status"]) == 1
    assert "has `tunewatch run` started" in capsys.readouterr().err


def test_usage_errors_exit_2(home: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["events", "--since", "yesterday"])
    assert info.value.code == 2


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("2", 2)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


def test_install_service_writes_the_unit_and_prints_next_steps(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["install-service"]) == 0
    out = capsys.readouterr().out
    unit = home / "config" / "systemd" / "user" / "tunewatch.service"
    assert unit.exists()
    assert f"Wrote {unit}" in out
    assert "systemctl --user enable --now tunewatch.service" in out
    assert "loginctl enable-linger" in out
    assert "Type=notify" in unit.read_text()
    assert os.stat(unit).st_mode & 0o777 == 0o644


def test_plugins_lists_the_built_in_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    assert "resources\ttunewatch.plugins.resources.ResourcesPlugin" in capsys.readouterr().out


TITLE_ESCAPE = "\x1b]0;PWNED\x07"  # would retitle the terminal


def test_status_and_events_show_escape_sequences_from_files_instead_of_obeying_them(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(home / "state" / "tunewatch" / "state.db")
    run = store.ensure_run(str(home / f"run{TITLE_ESCAPE}"), f"run{TITLE_ESCAPE}\u202e")
    bad_line = f"{TITLE_ESCAPE}\x9b2J\r\n"
    store.commit_batch(
        run,
        [
            StatusChanged(run="x", status=f"training{TITLE_ESCAPE}", source="s"),
            SourceError("x", "m.jsonl", "invalid_json", f"invalid JSON: {bad_line}", "m.jsonl:2"),
        ],
        None,
    )
    store.close()
    assert main(["status"]) == 0
    assert main(["events"]) == 0
    out = capsys.readouterr().out
    assert not {"\x1b", "\x07", "\x9b", "\r", "\u202e"} & set(out)
    assert "run\\x1b]0;PWNED\\x07\\u202e  (" in out  # name and path, on the run's own line
    assert "status         training\\x1b]0;PWNED\\x07" in out
    assert "invalid JSON: \\x1b]0;PWNED\\x07\\x9b2J\\r\\n" in out  # in status and in events
    assert out.count("invalid JSON: \\x1b]0;PWNED\\x07") == 2
    # JSON output keeps the data exactly (JSON escapes it by itself).
    assert main(["events", "--json", "--kind", "source_error"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert bad_line in row["summary"]


def test_a_daemon_reading_escape_sequences_from_a_log_never_prints_them(tmp_path: Path) -> None:
    # The reproduction: printf '\x1b]0;PWNED\x07...' >> run/m.jsonl, a run directory
    # name holding one too, and the console log format a person sees in a terminal.
    run = tmp_path / f"run-{TITLE_ESCAPE}"
    run.mkdir()
    log = run / "m.jsonl"
    log.write_bytes(b'{"step": 1, "loss": 1.0}\n' + TITLE_ESCAPE.encode() + b"...\n")
    config = tmp_path / "tunewatch.toml"
    config.write_text('[daemon]\nlog_format = "console"\n')
    with DaemonProcess(tmp_path) as daemon:
        ran = daemon.cli("--config", str(config), "run", "--once", "--no-notifications", str(run))
        status = daemon.cli("status").stdout
        events = daemon.cli("events").stdout
    for out in (ran.stderr, status, events):
        assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;PWNED\\x07..." in status and "\\x1b]0;PWNED\\x07..." in events


@pytest.mark.parametrize("where", ["before", "after"])
def test_the_config_file_may_come_before_or_after_the_verb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[daemon]\nrescan_interval_s = 0\n")  # refused: names the key
    args = (
        ["--config", str(config), "status"]
        if where == "before"
        else ["status", "--config", str(config)]
    )
    assert main(args) == 2
    assert "rescan_interval_s" in capsys.readouterr().err
