"""The [alertmanager] section: where alerts go, how often they are re-sent, and how to log in.

Checked when the config is loaded, so a typo in the URL or a label is refused at start with the
key's name rather than found by an alert that never arrives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from tunewatch.daemon.config import ConfigError, PositiveFloat

SECTION = "alertmanager"
# Alertmanager's (and Prometheus's) label names.
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Labels the plugin sets itself: a static label may not hide one of them.
OWN_LABELS = frozenset(
    {"alertname", "run", "kind", "severity", "host", "metric", "resource", "path", "source"}
)


@dataclass(frozen=True, slots=True)
class AlertmanagerConfig:
    enabled: bool = True
    url: str = ""  # "": the plugin does nothing
    resend_s: PositiveFloat = 60.0
    timeout_s: PositiveFloat = 10.0
    retry_s: PositiveFloat = 5.0
    retry_max_s: PositiveFloat = 300.0
    one_off_s: PositiveFloat = 3600.0
    labels: tuple[str, ...] = ()  # "name=value"
    basic_auth_user: str = ""
    password_file: str = ""
    bearer_token_file: str = ""
    generator_url: str = ""

    def __post_init__(self) -> None:
        if self.url:
            _check_url("url", self.url)
        if self.generator_url:
            _check_url("generator_url", self.generator_url)
        for item in self.labels:
            _check_label(item)
        if self.bearer_token_file and (self.basic_auth_user or self.password_file):
            raise _error("bearer_token_file", "use either basic auth or a bearer token, not both")
        if bool(self.basic_auth_user) != bool(self.password_file):
            raise _error(
                "basic_auth_user", "basic auth needs both basic_auth_user and password_file"
            )
        if self.retry_max_s < self.retry_s:
            raise _error("retry_max_s", f"must be at least retry_s ({self.retry_s:g})")

    @property
    def active(self) -> bool:
        """Whether the plugin sends anything: it is opt-in, by setting `url`."""
        return self.enabled and bool(self.url)

    @property
    def alerts_url(self) -> str:
        return self.url.rstrip("/") + "/api/v2/alerts"

    def static_labels(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.labels)


def _error(key: str, problem: str) -> ConfigError:
    return ConfigError(f"[{SECTION}] {key}: {problem}")


def _check_url(key: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError as exc:
        raise _error(key, f"not a URL ({exc}), got {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _error(key, f"expected an http:// or https:// URL with a host, got {url!r}")
    if key == "url" and (parts.query or parts.fragment or parts.username):
        raise _error(
            key,
            "give Alertmanager's base URL without a query, fragment or credentials "
            "(use basic_auth_user and password_file), e.g. http://alertmanager:9093",
        )


def _check_label(item: str) -> None:
    name, equals, value = item.partition("=")
    if not equals or not LABEL_NAME.fullmatch(name) or not value:
        raise _error(
            "labels", f'expected "name=value" with a label name [A-Za-z_]..., got {item!r}'
        )
    if name in OWN_LABELS:
        raise _error("labels", f"{name!r} is set by tunewatch itself; choose another name")
