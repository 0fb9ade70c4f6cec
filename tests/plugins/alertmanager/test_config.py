"""The [alertmanager] section: off without a url, and mistakes refused by key at load time."""

from __future__ import annotations

import pytest

from tunewatch.daemon.config import ConfigError, parse_section
from tunewatch.plugins.alertmanager.config import AlertmanagerConfig


def parse(**table: object) -> AlertmanagerConfig:
    return parse_section(AlertmanagerConfig, table, "alertmanager")


def test_it_is_off_unless_a_url_is_set() -> None:
    assert not AlertmanagerConfig().active
    assert not parse(url="http://am:9093", enabled=False).active
    config = parse(url="http://am:9093/", labels=["cluster=gpu-a"])
    assert config.active
    assert config.alerts_url == "http://am:9093/api/v2/alerts"
    assert config.static_labels() == {"cluster": "gpu-a"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"url": "am:9093"}, "[alertmanager] url: expected an http:// or https:// URL"),
        ({"url": "ftp://am"}, "[alertmanager] url: expected an http:// or https:// URL"),
        ({"url": "http://am:99999"}, "[alertmanager] url: not a URL"),
        ({"url": "http://u:p@am:9093"}, "without a query, fragment or credentials"),
        ({"labels": ["cluster"]}, '[alertmanager] labels: expected "name=value"'),
        ({"labels": ["1x=a"]}, '[alertmanager] labels: expected "name=value"'),
        ({"labels": ["run=a"]}, "'run' is set by tunewatch itself"),
        ({"basic_auth_user": "u"}, "needs both basic_auth_user and password_file"),
        (
            {"bearer_token_file": "/t", "basic_auth_user": "u", "password_file": "/p"},
            "either basic auth or a bearer token",
        ),
        ({"retry_s": 10.0, "retry_max_s": 5.0}, "[alertmanager] retry_max_s: must be at least"),
        ({"resend_s": 0}, "[alertmanager] resend_s: must be greater than 0"),
    ],
)
def test_mistakes_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(**table)
    assert message in str(info.value)
