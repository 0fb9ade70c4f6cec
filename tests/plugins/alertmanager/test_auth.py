"""Logging in to an Alertmanager that asks for basic auth: the password comes from its file,
works, and never shows in the log or in `tunewatch doctor`; a wrong one is an error that says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import AsyncStore
from tunewatch.plugins.alertmanager import AlertmanagerConfig, AlertmanagerPlugin
from tunewatch.plugins.alertmanager.client import basic_authorization
from tunewatch.plugins.alertmanager.doctor import checks
from tunewatch.plugins.alertmanager.mapping import AlertSpec, Change
from tunewatch.plugins.alertmanager.secrets import read_authorization

from .servers import AlertmanagerServer

PASSWORD = "s3cret-Pa55"


def bcrypt(password: str) -> str:
    """The hash Alertmanager's web config wants (glibc's crypt; the module is deprecated, so in
    a child interpreter where its warning does not fail the test)."""
    code = "import crypt; print(crypt.crypt(input(), crypt.mksalt(crypt.METHOD_BLOWFISH)))"
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        input=password,
        capture_output=True,
        text=True,
        check=True,
    )
    hashed = done.stdout.strip()
    if not hashed.startswith("$2"):
        pytest.skip("this libc's crypt has no bcrypt")
    return hashed


@pytest.fixture
def guarded(alertmanager: AlertmanagerServer) -> AlertmanagerServer:
    alertmanager.start(basic_auth=("tunewatch", bcrypt(PASSWORD)))
    return alertmanager


def config_for(server: AlertmanagerServer, tmp_path: Path, password: str) -> AlertmanagerConfig:
    secret = tmp_path / "am-password"
    secret.write_text(password + "\n")
    return AlertmanagerConfig(
        url=server.url,
        basic_auth_user="tunewatch",
        password_file=str(secret),
        retry_s=0.2,
        retry_max_s=0.4,
    )


def test_doctor_proves_the_login_without_showing_it(
    guarded: AlertmanagerServer, tmp_path: Path
) -> None:
    (good,) = checks(config_for(guarded, tmp_path, PASSWORD))
    assert good.ok, good.detail
    (bad,) = checks(config_for(guarded, tmp_path, "wrong"))
    assert bad.level == "error" and "HTTP 401" in bad.detail
    assert PASSWORD not in bad.detail + bad.fix and "wrong" not in bad.detail + bad.fix


def test_a_refused_login_is_logged_once_without_the_password(
    guarded: AlertmanagerServer, tmp_path: Path
) -> None:
    import asyncio

    async def scenario() -> None:
        store = await AsyncStore.open(tmp_path / "state.db")
        bus = EventBus()
        ctx = PluginContext(
            name="alertmanager",
            bus=bus,
            store=store,
            config=config_for(guarded, tmp_path, "not-" + PASSWORD),
            settings=Settings(),
            log=structlog.get_logger("tunewatch.plugins.alertmanager"),
            run_dirs={},
        )
        plugin = AlertmanagerPlugin(ctx)
        await plugin.start()
        spec = AlertSpec({"alertname": "TunewatchTest"}, {"summary": "s"})
        plugin.book.apply(Change("open", "k", 1.0, spec), now=1.0, one_off_s=60.0)
        for _ in range(3):
            assert not await plugin.send()
        await plugin.stop()
        await bus.close()
        await store.close()

    with capture_logs() as logs:
        asyncio.run(scenario())
    refused = [e for e in logs if "unreachable" in e["event"]]
    assert len(refused) == 1 and "HTTP 401" in refused[0]["error"]
    assert PASSWORD not in repr(logs)


def test_the_secret_file_must_exist_and_hold_something(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(RuntimeError, match=r"\[alertmanager\] bearer_token_file: .* is empty"):
        read_authorization(AlertmanagerConfig(url="http://am", bearer_token_file=str(empty)))
    missing = AlertmanagerConfig(url="http://am", bearer_token_file=str(tmp_path / "nope"))
    with pytest.raises(RuntimeError, match=r"bearer_token_file: cannot read"):
        read_authorization(missing)
    empty.write_text("tok\n")
    token = AlertmanagerConfig(url="http://am", bearer_token_file=str(empty))
    assert read_authorization(token) == "Bearer tok"
    assert basic_authorization("u", "p") == "Basic dTpw"
