"""The guide's Alertmanager section shows a config tunewatch accepts and an alertmanager.yml
Alertmanager's own checker accepts."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from fixtures.local_servers import require_binaries

from tunewatch.daemon.config import parse_section
from tunewatch.plugins.alertmanager.config import AlertmanagerConfig

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "guide.md"


def section_blocks(language: str) -> list[str]:
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("## 8. Alertmanager", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


def test_the_config_example_is_valid() -> None:
    (block,) = section_blocks("toml")
    table = tomllib.loads(block)["alertmanager"]
    config = parse_section(AlertmanagerConfig, table, "alertmanager")
    assert config.active and config.static_labels() == {"cluster": "gpu-a"}


def test_the_alertmanager_yml_example_passes_amtool(tmp_path: Path) -> None:
    require_binaries(("amtool",), "prometheus-alertmanager", "the guide's alertmanager.yml")
    amtool = shutil.which("amtool")
    assert amtool is not None
    (block,) = section_blocks("yaml")
    (tmp_path / "alertmanager.yml").write_text(block)
    checked = subprocess.run(
        [amtool, "check-config", str(tmp_path / "alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
