"""Which recorded events become Alertmanager alerts, and what their labels and texts are.

Pure functions of a history row (its kind and data, as `tunewatch events` shows them). An
episode (an anomaly, a resource running out, an unreadable file, recording stopped) opens an
alert under a key and its recovery resolves that key. A failed run or a failed data check has
no recovery: it is sent once with `endsAt` `one_off_s` later. Good news (a finished run, a new
best, a report, a comparison) is not an alert and is not sent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

from tunewatch.daemon import events as ev
from tunewatch.plugins import alert_messages as messages
from tunewatch.plugins.alert_messages import Alert

E = TypeVar("E", bound=ev.Event)

# History kinds read by the plugin (see `tunewatch events --kind`).
HISTORY_KINDS = (
    "anomaly",
    "recovered",
    "resource_alert",
    "resource_recovered",
    "source_unreadable",
    "source_readable",
    "recording_resumed",
    "validation",
    "status",
)

# A known resource's alertname; another resource gets "TunewatchResource<Name>".
_RESOURCE_NAMES = {
    "disk": "TunewatchDiskFilling",
    "memory": "TunewatchMemoryLow",
    "trainer_memory": "TunewatchTrainerMemoryClimbing",
    "gpu_memory": "TunewatchGpuMemoryFull",
}
RECORDING_KEY = "recording"
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """What an alert says: labels (its identity for Alertmanager) and annotations."""

    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass(frozen=True, slots=True)
class Change:
    """What one recorded event does to the alerts: open `key`, resolve it, or send a one-off."""

    action: Literal["open", "resolve", "one_off"]
    key: str
    time: float
    spec: AlertSpec | None = None  # for open and one_off


def change_for(kind: str, data: dict[str, Any], run_dirs: dict[str, str]) -> Change | None:
    """The change a recorded event of `kind` makes, or None when it is not an alert's business.

    `run_dirs` maps a run to its directory (the annotation a person opens)."""
    build = _BUILDERS.get(kind)
    return None if build is None else build(data, run_dirs)


def recording_failed(event: ev.RecordingFailed) -> Change:
    """Recording stopped: the store refuses writes, so this never reaches the history; the
    plugin hears it on the bus. `recording_resumed` in the history resolves it."""
    return _open(
        RECORDING_KEY,
        event.time,
        "TunewatchRecordingFailed",
        "recording",
        None,
        messages.recording_failed_alert(event),
        {},
    )


# -- builders -----------------------------------------------------------------------------------


def _anomaly(data: dict[str, Any], run_dirs: dict[str, str]) -> Change | None:
    event = _rebuild(ev.AnomalyDetected, data)
    if not event.push:  # info findings and repeats within the cooldown: recorded, not pushed
        return None
    alert = messages.anomaly_alert(event, run_dirs.get(event.run))
    return _open(
        _anomaly_key(event.run, event.kind, event.metric),
        event.time,
        anomaly_alertname(event.kind),
        event.kind,
        event.run,
        alert,
        {"metric": event.metric},
    )


def _recovered(data: dict[str, Any], run_dirs: dict[str, str]) -> Change:
    event = _rebuild(ev.AnomalyResolved, data)
    # Whatever its `push`: an alert that is open must close (a recovery read while catching up
    # is not pushed to the desktop, but Alertmanager must not keep it firing).
    return Change("resolve", _anomaly_key(event.run, event.kind, event.metric), event.time)


def _resource_alert(data: dict[str, Any], run_dirs: dict[str, str]) -> Change | None:
    event = _rebuild(ev.ResourceAlert, data)
    if not event.push:
        return None
    alertname = _RESOURCE_NAMES.get(event.resource) or "TunewatchResource" + _camel(event.resource)
    extra = {"resource": event.resource, "path": event.path or ""}
    alert = messages.resource_alert(event)
    key = _resource_key(event.resource, event.path, event.run)
    return _open(key, event.time, alertname, event.resource, event.run, alert, extra)


def _resource_recovered(data: dict[str, Any], run_dirs: dict[str, str]) -> Change:
    event = _rebuild(ev.ResourceRecovered, data)
    return Change("resolve", _resource_key(event.resource, event.path, event.run), event.time)


def _source_unreadable(data: dict[str, Any], run_dirs: dict[str, str]) -> Change:
    event = _rebuild(ev.SourceUnreadable, data)
    alert = messages.source_unreadable_alert(event, run_dirs.get(event.run))
    return _open(
        _key("source", event.run, event.source),
        event.time,
        "TunewatchSourceUnreadable",
        "source_unreadable",
        event.run,
        alert,
        {"source": event.source},
    )


def _source_readable(data: dict[str, Any], run_dirs: dict[str, str]) -> Change:
    event = _rebuild(ev.SourceReadable, data)
    return Change("resolve", _key("source", event.run, event.source), event.time)


def _recording_resumed(data: dict[str, Any], run_dirs: dict[str, str]) -> Change:
    return Change("resolve", RECORDING_KEY, float(data["time"]))


def _validation(data: dict[str, Any], run_dirs: dict[str, str]) -> Change | None:
    event = _rebuild(ev.ValidationFinished, data)
    if not messages.validation_failed(event):
        return None
    alert = messages.validation_alert(event)
    key = _key("validation", event.run or "", event.path, repr(event.time))
    return _one_off(key, event.time, "TunewatchDataCheckFailed", "validation", event.run, alert)


def _status(data: dict[str, Any], run_dirs: dict[str, str]) -> Change | None:
    event = _rebuild(ev.StatusChanged, data)
    if event.status not in messages.FAILED_STATUSES:
        return None
    # The body of the desktop's message needs the final metrics (a store query); the run, its
    # status and its step say what on-call needs.
    end = messages.RunEnd(step=event.step, total_steps=event.total_steps, final={})
    alert = messages.finished_alert(event, end, run_dirs.get(event.run))
    key = _key("status", event.run, repr(event.time))
    return _one_off(key, event.time, "TunewatchRunFailed", "run_failed", event.run, alert)


_BUILDERS = {
    "anomaly": _anomaly,
    "recovered": _recovered,
    "resource_alert": _resource_alert,
    "resource_recovered": _resource_recovered,
    "source_unreadable": _source_unreadable,
    "source_readable": _source_readable,
    "recording_resumed": _recording_resumed,
    "validation": _validation,
    "status": _status,
}


# -- labels and texts ---------------------------------------------------------------------------


def anomaly_alertname(kind: str) -> str:
    """`loss_spike` -> `TunewatchLossSpike`: one stable name per detector kind."""
    return "Tunewatch" + (_camel(kind) or "Anomaly")


def _camel(text: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^0-9A-Za-z]+", text) if part)


def label_value(text: str) -> str:
    """`text` as valid UTF-8 (a file name read with surrogateescape may hold lone surrogates,
    which no JSON decoder accepts), otherwise exactly as it is: it is part of the identity."""
    return _SURROGATE.sub("\ufffd", text)


def severity_label(alert: Alert) -> str:
    """critical stays critical; anything else pushed (a `normal` finding, a resource warning,
    an unreadable file) is a warning. `info` findings are never pushed, so never sent."""
    return "critical" if alert.critical else "warning"


def _open(
    key: str,
    when: float,
    alertname: str,
    kind: str,
    run: str | None,
    alert: Alert,
    extra: dict[str, str],
) -> Change:
    return Change("open", key, when, _spec(alertname, kind, run, alert, extra))


def _one_off(
    key: str, when: float, alertname: str, kind: str, run: str | None, alert: Alert
) -> Change:
    return Change("one_off", key, when, _spec(alertname, kind, run, alert, {}))


def _spec(
    alertname: str, kind: str, run: str | None, alert: Alert, extra: dict[str, str]
) -> AlertSpec:
    labels = {"alertname": alertname, "kind": kind, "severity": severity_label(alert)}
    if run:
        labels["run"] = run
    labels.update(extra)
    annotations = {"summary": alert.title, "description": alert.body}
    if alert.target:
        annotations["path"] = alert.target
    return AlertSpec(
        labels={name: label_value(value) for name, value in labels.items() if value},
        annotations={name: label_value(value) for name, value in annotations.items()},
    )


def _key(*parts: str) -> str:
    # A NUL never occurs in a run name or a path: the parts cannot run into each other.
    return "\x00".join(parts)


def _anomaly_key(run: str, kind: str, metric: str) -> str:
    return _key("anomaly", run, kind, metric)


def _resource_key(resource: str, path: str | None, run: str | None) -> str:
    return _key("resource", resource, path or "", run or "")


def _rebuild(cls: type[E], data: dict[str, Any]) -> E:
    """The event a history row was recorded from. The history stores NaN and infinities as
    null (JSON has neither): a float field that came back null was not finite."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if value is None and f.type in ("float", float):
            value = math.nan
        values[f.name] = value
    return cls(**values)
