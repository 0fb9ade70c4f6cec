"""The [anomaly] section: flat, validated keys, and a config.toml that documents the defaults."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from tunewatch.daemon.config import ConfigError, parse_section
from tunewatch.plugins.anomaly.config import AnomalyConfig

REPO = Path(__file__).resolve().parents[3]


def test_the_shipped_section_documents_exactly_the_defaults() -> None:
    raw = tomllib.loads((REPO / "config.toml").read_text(encoding="utf-8"))
    assert parse_section(AnomalyConfig, raw["anomaly"], "anomaly") == AnomalyConfig()
    assert set(raw["anomaly"]) == {f.name for f in dataclasses.fields(AnomalyConfig)}


def test_values_are_typed_and_lists_become_tuples() -> None:
    config = parse_section(
        AnomalyConfig,
        {"zscore_metrics": ["grad_norm", "loss"], "cooldown_s": 60, "zscore_severity": "critical"},
        "anomaly",
    )
    assert config.zscore_metrics == ("grad_norm", "loss")
    assert config.cooldown_s == 60.0
    assert config.zscore_severity == "critical"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"spike_mad_z": -1}, "[anomaly] spike_mad_z: expected a non-negative number"),
        ({"warmup_points": 2.5}, "[anomaly] warmup_points: expected a non-negative integer"),
        ({"zscore_severity": "loud"}, "expected one of 'info', 'normal', 'critical'"),
        ({"spike_treshold": 3}, "[anomaly] unknown key 'spike_treshold'"),
        (
            {"not_learning_min_improvement": 0.7},
            "[anomaly] not_learning_min_improvement: must be at most 0.5",
        ),
    ],
)
def test_mistakes_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_section(AnomalyConfig, table, "anomaly")
    assert message in str(info.value)
