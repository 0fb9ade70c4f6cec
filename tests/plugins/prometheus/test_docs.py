"""docs/prometheus/: the alerting rules pass `promtool check rules` and their own unit tests,
and the rules and the Grafana dashboard only query metrics the exporter really exports."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tunewatch.plugins.prometheus.collector import exposed_names

from .prometheus_server import require_binaries

DOCS = Path(__file__).resolve().parents[3] / "docs" / "prometheus"
RULES = DOCS / "tunewatch-alerts.yml"
DASHBOARD = DOCS / "tunewatch-dashboard.json"
# Series that come from Prometheus itself or node_exporter, not from tunewatch.
OTHER_METRICS = {"up", "node_textfile_mtime_seconds"}
_NOT_METRICS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "or",
    "and",
    "unless",
    "offset",
    "Inf",
    "NaN",
    "vector",
}


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords and labels left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    names = set(re.findall(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", text))
    return {n for n in names if n not in _NOT_METRICS and not n.isdigit()}


def dashboard_queries() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", variable["definition"])
            assert inner is not None, variable
            yield inner.group(1)


def rule_queries() -> list[str]:
    # Every rule's expression is on its `expr:` line (promtool checks the file is valid YAML).
    queries = re.findall(r"^\s+expr:\s*(.+)$", RULES.read_text(), re.MULTILINE)
    assert len(queries) == RULES.read_text().count("- alert:")
    return queries


def test_metric_names_reads_the_metrics_of_an_expression() -> None:
    expr = 'sum by (kind) (increase(tunewatch_alerts_total{run=~"$run"}[1h])) or up == 0'
    assert metric_names(expr) == {"tunewatch_alerts_total", "up"}


def test_the_dashboard_queries_only_exported_metrics() -> None:
    used = set().union(*(metric_names(q) for q in dashboard_queries()))
    assert used - OTHER_METRICS <= exposed_names(), used - OTHER_METRICS - exposed_names()
    assert {"tunewatch_run_loss", "tunewatch_run_status", "tunewatch_alerts_total"} <= used


def test_the_rules_query_only_exported_metrics() -> None:
    used = set().union(*(metric_names(q) for q in rule_queries()))
    assert used - OTHER_METRICS <= exposed_names(), used - OTHER_METRICS - exposed_names()


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    require_binaries()
    for command in (["check", "rules", RULES.name], ["test", "rules", "tunewatch-alerts.test.yml"]):
        done = subprocess.run(["promtool", *command], cwd=DOCS, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
