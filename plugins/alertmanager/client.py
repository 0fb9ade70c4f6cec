"""A minimal HTTP/1.1 POST over asyncio streams: Alertmanager's API takes one JSON request.

No HTTP library is a dependency of the daemon, and a worker thread would cost it a malloc arena;
one request a minute needs neither: a connection per request, `Connection: close`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

# Enough of a response to read its status and an error message; Alertmanager answers briefly.
MAX_RESPONSE_BYTES = 64 * 1024


class DeliveryError(Exception):
    """The request did not get a 2xx answer; the message says why, never the credentials."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    path: str
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        host = parts.hostname or ""
        return cls(host, parts.port or (443 if tls else 80), parts.path or "/", tls)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


def basic_authorization(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


async def post_json(
    endpoint: Endpoint, body: bytes, *, authorization: str | None, timeout_s: float
) -> int:
    """POST `body` as JSON; the status code of a 2xx answer, else DeliveryError."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _exchange(endpoint, body, authorization)
    except TimeoutError:
        raise DeliveryError(f"no answer within {timeout_s:g} s") from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"TLS failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise DeliveryError(exc.strerror or str(exc) or type(exc).__name__) from None


async def _exchange(endpoint: Endpoint, body: bytes, authorization: str | None) -> int:
    context = ssl.create_default_context() if endpoint.tls else None
    reader, writer = await asyncio.open_connection(
        endpoint.host,
        endpoint.port,
        ssl=context,
        server_hostname=endpoint.host if context else None,
    )
    try:
        head = [
            f"POST {endpoint.path} HTTP/1.1",
            f"Host: {endpoint.host_header}",
            "User-Agent: tunewatch",
            "Content-Type: application/json",
            "Accept: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        if authorization:
            head.append(f"Authorization: {authorization}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        response = await reader.read(MAX_RESPONSE_BYTES)
        while len(response) < MAX_RESPONSE_BYTES and (more := await reader.read(4096)):
            response += more
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return _status(response)


def _status(response: bytes) -> int:
    status_line, _, rest = response.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise DeliveryError(f"not an HTTP answer: {status_line[:80]!r}")
    code = int(parts[1])
    if 200 <= code < 300:
        return code
    _, _, payload = rest.partition(b"\r\n\r\n")
    reason = payload.decode("utf-8", "replace").strip().replace("\n", " ")[:300]
    raise DeliveryError(f"HTTP {code}: {reason}" if reason else f"HTTP {code}")
