"""The [prometheus] section: `listen` is checked when the config is loaded, with a clear
message, and off is the default."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunewatch.daemon.config import ConfigError, settings_from_mapping
from tunewatch.daemon.plugin import discover_plugins, plugin_config
from tunewatch.plugins.prometheus import ListenAddress, PrometheusConfig, parse_listen


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:9464", "127.0.0.1", 9464),
        ("0.0.0.0:1", "0.0.0.0", 1),
        ("[::1]:9464", "::1", 9464),
        ("[::]:65535", "::", 65535),
        ("localhost:9464", "localhost", 9464),
        ("gpu-box-3.example.org:9100", "gpu-box-3.example.org", 9100),
    ],
)
def test_listen_accepts_host_port_and_bracketed_ipv6(text: str, host: str, port: int) -> None:
    assert parse_listen(text) == ListenAddress(host, port)
    assert str(parse_listen(text)) == text


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("9464", "expected host:port"),
        (":9464", "expected host:port"),
        ("127.0.0.1", "expected host:port"),
        ("127.0.0.1:0", "outside 1-65535"),
        ("127.0.0.1:65536", "outside 1-65535"),
        ("127.0.0.1:http", "must be a number"),
        ("127.0.0.1:-1", "must be a number"),
        ("::1:9464", "brackets"),
        ("[::1]9464", "[address]:port"),
        ("[127.0.0.1]:9464", "not an IPv6 address"),
        ("300.1.2.3:9464", "not an IP address or host name"),
        ("my host:9464", "not an IP address or host name"),
        ("127.0.0.1:９４６４", "must be a number"),
    ],
)
def test_a_bad_listen_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=".*" + says.replace("[", r"\[").replace("]", r"\]")):
        parse_listen(text)


@given(st.text(max_size=40))
def test_any_listen_text_parses_or_raises_value_error(text: str) -> None:
    try:
        address = parse_listen(text)
    except ValueError:
        return
    assert 1 <= address.port <= 65535
    assert parse_listen(str(address)) == address


@given(st.ip_addresses(), st.integers(1, 65535))
def test_every_ip_address_and_port_round_trips(ip: object, port: int) -> None:
    address = ListenAddress(str(ip), port)
    assert parse_listen(str(address)) == address


def test_the_config_names_the_key_of_a_bad_listen() -> None:
    (plugin,) = [p for p in discover_plugins() if p.name == "prometheus"]
    settings = settings_from_mapping(
        {"prometheus": {"listen": "localhost"}}, "c.toml", ["prometheus"]
    )
    with pytest.raises(
        ConfigError, match=r"\[prometheus\] listen: 'localhost': expected host:port"
    ):
        plugin_config(plugin, settings)


def test_off_by_default() -> None:
    config = PrometheusConfig()
    assert config.listen == "" and config.textfile_dir == ""
    assert config.address() is None
