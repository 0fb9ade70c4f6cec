"""Which recorded events become Alertmanager alerts, with which labels and texts."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunewatch.daemon.events import (
    AnomalyDetected,
    AnomalyResolved,
    BestModelFound,
    Event,
    RecordingFailed,
    ReportWritten,
    ResourceAlert,
    ResourceRecovered,
    Severity,
    SourceReadable,
    SourceUnreadable,
    StatusChanged,
    ValidationFinished,
)
from tunewatch.daemon.store import Store
from tunewatch.plugins.alertmanager.mapping import (
    HISTORY_KINDS,
    Change,
    anomaly_alertname,
    change_for,
    label_value,
    recording_failed,
)

from .history import record_and_read

RUN_DIRS = {"run-a": "/runs/run-a"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "state.db")
    yield opened
    opened.close()


def changes(store: Store, *events: Event) -> list[Change | None]:
    return [
        change_for(kind, data, RUN_DIRS) for _seq, kind, data in record_and_read(store, *events)
    ]


def nan_loss(severity: Severity = "critical", push: bool = True) -> AnomalyDetected:
    return AnomalyDetected(
        run="run-a",
        step=120,
        kind="non_finite",
        severity=severity,
        metric="loss",
        value=math.nan,
        expected=None,
        detail="",
        time=1_700_000_000.0,
        push=push,
    )


def test_a_nan_loss_opens_a_critical_alert_labelled_by_run_kind_and_metric(store: Store) -> None:
    (change,) = changes(store, nan_loss())
    assert change is not None and change.action == "open" and change.spec is not None
    assert change.time == 1_700_000_000.0
    assert change.spec.labels == {
        "alertname": "TunewatchNonFinite",
        "kind": "non_finite",
        "severity": "critical",
        "run": "run-a",
        "metric": "loss",
    }
    # What a person reads on the desktop, and where to look.
    assert change.spec.annotations == {
        "summary": "NaN loss: run-a",
        "description": "Step 120: loss is NaN",
        "path": "/runs/run-a",
    }


def test_no_step_or_value_in_the_labels_so_one_episode_is_one_alert(store: Store) -> None:
    first, later = nan_loss(), nan_loss()
    object.__setattr__(later, "step", 500)
    a, b = changes(store, first, later)
    assert a is not None and b is not None and a.spec is not None and b.spec is not None
    assert a.key == b.key
    assert a.spec.labels == b.spec.labels


def test_its_recovery_resolves_the_same_key_whether_pushed_or_not(store: Store) -> None:
    opened, resolved, quiet = changes(
        store,
        nan_loss(),
        AnomalyResolved("run-a", 130, "non_finite", "loss", time=1_700_000_100.0),
        AnomalyResolved("run-a", 130, "non_finite", "loss", time=1_700_000_200.0, push=False),
    )
    assert opened is not None and resolved is not None and quiet is not None
    assert (resolved.action, resolved.key, resolved.time) == ("resolve", opened.key, 1.7000001e9)
    assert (quiet.action, quiet.key) == ("resolve", opened.key)


def test_a_normal_finding_is_a_warning_and_findings_not_pushed_are_not_sent(
    store: Store,
) -> None:
    normal, held, info = changes(
        store, nan_loss("normal"), nan_loss(push=False), nan_loss("info", push=False)
    )
    assert normal is not None and normal.spec is not None
    assert normal.spec.labels["severity"] == "warning"
    assert held is None and info is None


def test_each_detector_kind_has_its_own_stable_alertname() -> None:
    assert anomaly_alertname("divergence") == "TunewatchDivergence"
    assert anomaly_alertname("loss_spike") == "TunewatchLossSpike"
    assert anomaly_alertname("eval loss/odd kind!") == "TunewatchEvalLossOddKind"
    assert anomaly_alertname("<>") == "TunewatchAnomaly"


def test_a_disk_filling_up_is_an_episode_of_its_volume(store: Store) -> None:
    alert = ResourceAlert(
        "disk", "critical", "/data fills in 1.4 h", "delete checkpoint-100", path="/data"
    )
    opened, resolved = changes(store, alert, ResourceRecovered("disk", "freed", path="/data"))
    assert opened is not None and opened.spec is not None and resolved is not None
    assert opened.spec.labels == {
        "alertname": "TunewatchDiskFilling",
        "kind": "disk",
        "severity": "critical",
        "resource": "disk",
        "path": "/data",
    }
    assert opened.spec.annotations["description"] == "/data fills in 1.4 h. delete checkpoint-100"
    assert (resolved.action, resolved.key) == ("resolve", opened.key)


def test_an_unreadable_log_fires_until_it_is_readable_again(store: Store) -> None:
    opened, resolved = changes(
        store,
        SourceUnreadable("run-a", "/runs/run-a/log.jsonl", "permission", "denied", "log.jsonl"),
        SourceReadable("run-a", "/runs/run-a/log.jsonl", "log.jsonl", 30.0),
    )
    assert opened is not None and opened.spec is not None and resolved is not None
    assert opened.spec.labels["alertname"] == "TunewatchSourceUnreadable"
    assert opened.spec.labels["source"] == "/runs/run-a/log.jsonl"
    assert (resolved.action, resolved.key) == ("resolve", opened.key)


def test_recording_stopped_is_heard_on_the_bus_and_resolved_from_the_history(
    store: Store,
) -> None:
    from tunewatch.daemon.events import RecordingResumed

    opened = recording_failed(RecordingFailed("disk full", since=1.0, time=2.0))
    (resolved,) = changes(store, RecordingResumed("disk full", since=1.0, time=9.0))
    assert opened.spec is not None and opened.spec.labels["severity"] == "critical"
    assert resolved is not None and (resolved.action, resolved.key) == ("resolve", opened.key)


def test_a_failed_run_and_a_failed_data_check_are_one_offs(store: Store) -> None:
    failed = StatusChanged("run-a", "failed", "training_status.json", step=40, total_steps=100)
    check = ValidationFinished("run-a", "/runs/run-a/inbox/train.jsonl", 40, "fix", 12, 3, None)
    run_change, check_change = changes(store, failed, check)
    assert run_change is not None and run_change.spec is not None
    assert run_change.action == "one_off"
    assert run_change.spec.labels["alertname"] == "TunewatchRunFailed"
    assert run_change.spec.labels["severity"] == "critical"
    assert check_change is not None and check_change.spec is not None
    assert check_change.action == "one_off"
    assert check_change.spec.labels["alertname"] == "TunewatchDataCheckFailed"


def test_good_news_is_not_an_alert(store: Store) -> None:
    good = changes(
        store,
        StatusChanged("run-a", "completed", "training_status.json"),
        StatusChanged("run-a", "training", "training_status.json"),
        ValidationFinished("run-a", "/x/train.jsonl", 95, "ready", 0, 0, None),
        BestModelFound("run-a", 10, "eval_loss", 0.5, None),
        ReportWritten("/reports/r.md", 24.0),
    )
    # Bests and reports are not even read; the statuses and the check are, and are no alert.
    assert good == [None, None, None]


def test_label_values_are_valid_utf8_and_otherwise_exactly_the_text() -> None:
    assert label_value("run\udcff-a") == "run\ufffd-a"
    assert label_value("rün <b>&\x1b") == "rün <b>&\x1b"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@given(
    kind=st.sampled_from(HISTORY_KINDS),
    data=st.dictionaries(
        st.sampled_from(
            [
                "run",
                "step",
                "kind",
                "severity",
                "metric",
                "value",
                "time",
                "push",
                "status",
                "source",
                "path",
                "resource",
                "verdict",
                "summary",
            ]
        ),
        JSON,
    ),
)
def test_whatever_a_row_holds_an_alert_made_of_it_has_only_text_labels(
    kind: str, data: dict[str, Any]
) -> None:
    """Rows written by another version or a third-party plugin are outside input. Either they
    make an alert whose labels and annotations are all strings (one number among them would get
    every alert of the request refused, for good), or they raise, and the plugin skips them."""
    try:
        change = change_for(kind, data, RUN_DIRS)
    except Exception:
        return
    if change is None or change.spec is None:
        return
    texts = {**change.spec.labels, **change.spec.annotations}
    assert all(isinstance(v, str) for v in texts.values())
    assert all(isinstance(k, str) for k in texts)
