"""The [prometheus] section, and the `listen` address it names ("host:port", "[::1]:9464")."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from tunewatch.daemon.config import ConfigError, PositiveFloat, PositiveInt

# A DNS name as a person writes it in a config: labels of letters, digits and hyphens.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_EXAMPLE = 'e.g. "127.0.0.1:9464", "0.0.0.0:9464" (every interface) or "[::1]:9464"'


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where the exporter serves /metrics."""

    host: str  # an IPv4 or IPv6 address (without brackets) or a host name
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """`text` ("host:port", "[v6]:port") as an address; ValueError says what is wrong."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{text!r}: an IPv6 address is written [address]:port; {_EXAMPLE}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address; {_EXAMPLE}") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise ValueError(f"{text!r}: expected host:port; {_EXAMPLE}")
        if ":" in host:
            raise ValueError(f"{text!r}: put an IPv6 address in brackets, [address]:port")
        if not _is_host(host):
            raise ValueError(f"{text!r}: {host!r} is not an IP address or host name; {_EXAMPLE}")
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is outside 1-65535")
    return ListenAddress(host, port)


def _is_host(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return _HOSTNAME.match(host) is not None and not host.replace(".", "").isdigit()
    return True


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    enabled: bool = True
    # "host:port" to serve /metrics on; "": no socket.
    listen: str = ""
    # The node_exporter textfile collector's folder; "": no file.
    textfile_dir: str = ""
    textfile_interval_s: PositiveFloat = 15.0
    # A run silent this long is no longer exported (its series end; the history stays).
    forget_after_hours: PositiveFloat = 24.0
    # At most this many runs are exported, the most recently active first.
    max_runs: PositiveInt = 500
    # After a failure to listen (the port taken), the next try comes this long after.
    retry_s: PositiveFloat = 30.0

    def __post_init__(self) -> None:
        if self.listen:
            try:
                parse_listen(self.listen)
            except ValueError as exc:
                raise ConfigError(f"[prometheus] listen: {exc}") from None

    def address(self) -> ListenAddress | None:
        return parse_listen(self.listen) if self.listen else None
