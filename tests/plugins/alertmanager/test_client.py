"""The HTTP client against a real Alertmanager: accepted, refused with its reason, unreachable,
silent; and any text a run or a detector can produce makes labels Alertmanager accepts."""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import time
from collections.abc import Iterator

import orjson
import pytest
from fixtures.local_servers import free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewatch.daemon.events import AnomalyDetected
from tunewatch.daemon.history import to_row
from tunewatch.plugins.alertmanager.book import TrackedAlert, alert_json
from tunewatch.plugins.alertmanager.client import DeliveryError, Endpoint, post_json
from tunewatch.plugins.alertmanager.mapping import Change, change_for

from .servers import AlertmanagerServer


@pytest.fixture
def running(alertmanager: AlertmanagerServer) -> Iterator[AlertmanagerServer]:
    alertmanager.start()
    yield alertmanager


def endpoint(server: AlertmanagerServer) -> Endpoint:
    return Endpoint.parse(f"{server.url}/api/v2/alerts")


async def test_an_alert_alertmanager_accepts_is_listed(running: AlertmanagerServer) -> None:
    body = orjson.dumps([{"labels": {"alertname": "TunewatchTest", "run": "r"}}])
    assert await post_json(endpoint(running), body, authorization=None, timeout_s=5) == 200
    listed = await asyncio.to_thread(running.alert, alertname="TunewatchTest")
    assert listed is not None and listed["labels"]["run"] == "r"


async def test_a_refused_request_says_what_alertmanager_answered(
    running: AlertmanagerServer,
) -> None:
    with pytest.raises(DeliveryError, match=r"^HTTP 400: .*label pair required"):
        await post_json(endpoint(running), b'[{"labels": {}}]', authorization=None, timeout_s=5)


async def test_nothing_listening_is_a_delivery_error() -> None:
    target = Endpoint.parse(f"http://127.0.0.1:{free_port()}/api/v2/alerts")
    with pytest.raises(DeliveryError, match=r"[Cc]onnect"):
        await post_json(target, b"[]", authorization=None, timeout_s=5)


async def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = Endpoint.parse(f"http://127.0.0.1:{silent.getsockname()[1]}/api/v2/alerts")
        with pytest.raises(DeliveryError, match=r"no answer within 0.3 s"):
            await post_json(target, b"[]", authorization=None, timeout_s=0.3)


_cases = itertools.count()


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    run=st.text(min_size=1, max_size=40), detail=st.text(max_size=200), metric=st.text(max_size=30)
)
def test_any_run_name_metric_or_detail_makes_an_alert_alertmanager_accepts(
    running: AlertmanagerServer, run: str, detail: str, metric: str
) -> None:
    case = str(next(_cases))
    event = AnomalyDetected(run, 3, "non_finite", "critical", metric, math.nan, None, detail)
    # As the plugin reads it: through the history's JSON.
    data = orjson.loads(orjson.dumps(to_row(event).data, default=str))
    change = change_for("anomaly", data, {})
    assert isinstance(change, Change) and change.spec is not None
    alert = TrackedAlert("k", change.spec.labels, change.spec.annotations, time.time())
    payload = alert_json(
        alert, now=time.time(), resend_s=60, common_labels={"case": case}, generator_url=""
    )
    asyncio.run(
        post_json(endpoint(running), orjson.dumps([payload]), authorization=None, timeout_s=5)
    )
    listed = running.alert(case=case)
    assert listed is not None
    assert listed["labels"] == payload["labels"]
    assert listed["annotations"] == payload["annotations"]


@given(st.binary(max_size=300))
def test_any_answer_is_a_status_or_a_delivery_error(answer: bytes) -> None:
    from tunewatch.plugins.alertmanager.client import _status

    try:
        code = _status(answer)
    except DeliveryError as exc:
        assert str(exc)
    else:
        assert 200 <= code < 300
