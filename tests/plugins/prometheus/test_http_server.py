"""/metrics over a real loopback socket: what Prometheus gets, what anything else gets, a port
already taken, and nothing at all when the exporter is off."""

from __future__ import annotations

import asyncio
import random
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fixtures.local_servers import free_port
from hypothesis import given
from hypothesis import strategies as st

from tunewatch.daemon.events import MetricsLogged
from tunewatch.plugins.prometheus import PrometheusConfig
from tunewatch.plugins.prometheus.http_server import MAX_REQUEST_BYTES, parse_request_line

from .harness import exporter, parse, value


def get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


async def fetch(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    return await asyncio.to_thread(get, url, method)


async def raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def wait_listening(port: int) -> None:
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing listens on {port}")


async def test_get_metrics_serves_the_text_format(tmp_path: Path) -> None:
    port = free_port()
    config = PrometheusConfig(listen=f"127.0.0.1:{port}")
    async with exporter(tmp_path / "state.db", config) as ex:
        await ex.commit("run-a", MetricsLogged("run-a", 7, {"loss": 0.25}, "log.jsonl"))
        await wait_listening(port)
        status, content_type, body = await fetch(f"http://127.0.0.1:{port}/metrics")
        head = await fetch(f"http://127.0.0.1:{port}/metrics", "HEAD")
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert value(parse(body.decode()), "tunewatch_run_loss", run="run-a") == 0.25
    assert head[0] == 200 and head[2] == b""


async def test_other_paths_methods_and_oversized_requests_are_refused(tmp_path: Path) -> None:
    port = free_port()
    async with exporter(tmp_path / "state.db", PrometheusConfig(listen=f"127.0.0.1:{port}")):
        await wait_listening(port)
        assert (await fetch(f"http://127.0.0.1:{port}/"))[0] == 404
        assert (await fetch(f"http://127.0.0.1:{port}/metrics/../etc"))[0] == 404
        assert (await fetch(f"http://127.0.0.1:{port}/metrics", "POST"))[0] == 405
        huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (2 * MAX_REQUEST_BYTES) + b"\r\n\r\n"
        assert (await raw(port, huge)).startswith(b"HTTP/1.1 431 ")
        assert (await raw(port, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        # A client that opens and says nothing holds nothing else up.
        idle = await asyncio.open_connection("127.0.0.1", port)
        assert (await fetch(f"http://127.0.0.1:{port}/metrics"))[0] == 200
        idle[1].close()


async def test_a_port_taken_is_reported_once_retried_and_the_rest_keeps_working(
    tmp_path: Path,
) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    config = PrometheusConfig(
        listen=f"127.0.0.1:{port}", textfile_dir=str(tmp_path / "textfile"), retry_s=0.1
    )
    try:
        async with exporter(tmp_path / "state.db", config) as ex:
            await asyncio.sleep(0.5)  # several tries
            assert len(ex.failures) == 1, ex.failures
            assert f"cannot listen on 127.0.0.1:{port}" in ex.failures[0]
            assert "Retried every 0.1 s" in ex.failures[0]
            assert value(ex.scrape(), "tunewatch_plugin_failed", plugin="prometheus") == 1
            # Events are still followed, and the textfile still written.
            await ex.commit("run-a", MetricsLogged("run-a", 1, {"loss": 2.0}, "log.jsonl"))
            await ex.plugin.write_textfile()
            written = (tmp_path / "textfile" / "tunewatch.prom").read_text()
            assert value(parse(written), "tunewatch_run_loss", run="run-a") == 2.0
            holder.close()  # the other program goes away: the next try listens
            await wait_listening(port)
            status, _type, body = await fetch(f"http://127.0.0.1:{port}/metrics")
            assert status == 200 and b'tunewatch_run_loss{run="run-a"} 2.0' in body
            assert value(parse(body.decode()), "tunewatch_plugin_failed", plugin="prometheus") == 0
    finally:
        holder.close()


async def test_off_by_default_no_socket_no_file_no_subscription(tmp_path: Path) -> None:
    async with exporter(tmp_path / "state.db", PrometheusConfig()) as ex:
        assert ex.plugin.server is None and ex.plugin.registry is None
        assert not [s for s in ex.bus.stats() if s.name.startswith("prometheus")]
        assert not ex.plugin._tasks
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("state.db")] == []


@pytest.mark.parametrize("host", ["::1"])
async def test_ipv6_loopback(tmp_path: Path, host: str) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    port = free_port()
    async with exporter(tmp_path / "state.db", PrometheusConfig(listen=f"[{host}]:{port}")) as ex:
        for _ in range(100):
            if ex.plugin.server is not None or ex.failures:
                break
            await asyncio.sleep(0.02)
        if ex.failures and "Cannot assign" in ex.failures[0]:
            pytest.skip("IPv6 loopback not configured here")
        status, _t, _b = await fetch(f"http://[{host}]:{port}/metrics")
    assert status == 200


@given(st.binary(max_size=200))
def test_any_request_head_is_read_as_a_request_or_refused(head: bytes) -> None:
    method, target = parse_request_line(head)
    assert (method is None) == (target is None)
    if method is not None:
        assert target is not None
        line = head.split(b"\r\n", 1)[0]
        assert line == f"{method} {target} ".encode() + line.rsplit(b" ", 1)[1]
        assert line.rsplit(b" ", 1)[1].startswith(b"HTTP/1.")


def test_a_request_line_is_split_into_method_and_target() -> None:
    assert parse_request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == ("GET", "/metrics")
    assert parse_request_line(b"GET /metrics\r\n\r\n") == (None, None)
    assert parse_request_line(b"GET /\xff HTTP/1.1\r\n\r\n") == (None, None)


async def test_random_bytes_from_a_client_get_an_http_answer_or_a_close(tmp_path: Path) -> None:
    port = free_port()
    async with exporter(tmp_path / "state.db", PrometheusConfig(listen=f"127.0.0.1:{port}")):
        await wait_listening(port)
        rng = random.Random(7)
        for _ in range(20):
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            answer = await raw(port, junk + b"\r\n\r\n")
            assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 404 ", b"HTTP/1.1 405 "))
        assert (await fetch(f"http://127.0.0.1:{port}/metrics"))[0] == 200
