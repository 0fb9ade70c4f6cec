"""The Authorization header, from a secret kept in a file: never in the config, never logged."""

from __future__ import annotations

from pathlib import Path

from tunewatch.plugins.alertmanager.client import basic_authorization
from tunewatch.plugins.alertmanager.config import AlertmanagerConfig


def read_authorization(config: AlertmanagerConfig) -> str | None:
    """The Authorization header from the configured secret file; the secret is never logged."""
    if config.bearer_token_file:
        return "Bearer " + _secret(config.bearer_token_file, "bearer_token_file")
    if config.basic_auth_user:
        password = _secret(config.password_file, "password_file")
        return basic_authorization(config.basic_auth_user, password)
    return None


def _secret(path: str, key: str) -> str:
    file = Path(path).expanduser()
    try:
        secret = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntimeError(f"[alertmanager] {key}: cannot read {file}: {exc}") from None
    if not secret:
        raise RuntimeError(f"[alertmanager] {key}: {file} is empty")
    return secret
