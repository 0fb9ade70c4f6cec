"""A minimal HTTP/1.1 server for `GET /metrics`, on the daemon's event loop.

prometheus_client's `start_http_server` serves from a thread of its own, and a thread gets a
malloc arena of its own (measured at +25 MB of daemon RSS once); a scrape is one small request
every few seconds, which asyncio answers without one. Each connection gets one response and is
closed; a request head is bounded in size and time, so a slow or hostile client holds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from tunewatch.plugins.prometheus.config import ListenAddress

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the Prometheus text format
MAX_REQUEST_BYTES = 8192  # a request head (line and headers); Prometheus sends about 300
REQUEST_TIMEOUT_S = 10.0  # to send the head, and to take the response
MAX_CONNECTIONS = 16  # beyond this many open at once, a new one is closed at once

log = structlog.get_logger(__name__)


class MetricsServer:
    """Serves `render()` at /metrics on `address` until `close`."""

    def __init__(self, address: ListenAddress, render: Callable[[], bytes]) -> None:
        self.address = address
        self.render = render
        self._server: asyncio.Server | None = None
        self._open = 0

    async def start(self) -> None:
        """Listen; raises OSError (the port taken, an address not on this machine)."""
        self._server = await asyncio.start_server(
            self._serve,
            self.address.host,
            self.address.port,
            limit=MAX_REQUEST_BYTES,
            reuse_address=True,
        )

    def ports(self) -> list[int]:
        """The ports listened on (the configured one, for every address it resolved to)."""
        if self._server is None:
            return []
        return [int(sock.getsockname()[1]) for sock in self._server.sockets]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open <= MAX_CONNECTIONS:
                await self._answer(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or was too slow: nothing to tell anyone
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), REQUEST_TIMEOUT_S)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            await _respond(writer, 431, b"request head too large\n")
            return
        method, target = parse_request_line(head)
        if method is None or target is None:
            await _respond(writer, 400, b"bad request\n")
            return
        if target.split("?", 1)[0] != "/metrics":
            await _respond(writer, 404, b"not found: tunewatch serves /metrics\n")
            return
        if method not in ("GET", "HEAD"):
            await _respond(writer, 405, b"only GET /metrics\n", extra=b"Allow: GET, HEAD\r\n")
            return
        body = self.render()
        await _respond(writer, 200, body, content_type=CONTENT_TYPE, head_only=method == "HEAD")


def parse_request_line(head: bytes) -> tuple[str | None, str | None]:
    """(method, target) of a request head's first line; (None, None) when it is not HTTP/1.x."""
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None, None
    try:
        return parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None, None


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
}


async def _respond(
    writer: asyncio.StreamWriter,
    code: int,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    extra: bytes = b"",
    head_only: bool = False,
) -> None:
    head = (
        f"HTTP/1.1 {code} {_REASONS[code]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    ).encode("ascii")
    writer.write(head + extra + b"\r\n" + (b"" if head_only else body))
    await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_S)
