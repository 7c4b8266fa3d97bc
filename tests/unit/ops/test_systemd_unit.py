"""The systemd unit shipped in os-build/systemd: what operators install must be valid and say
what doc/upgrade.md promises (Type=notify, reload = `sozu upgrade`, drain on stop)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[3] / "os-build" / "systemd" / "sozu.service"


def directives() -> dict[str, list[str]]:
    """`Key=value` lines of the unit (comments and section headers skipped), values per key."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


def test_the_unit_is_notify_and_reloads_with_an_upgrade() -> None:
    unit = directives()
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["all"]  # the new main's READY=1 after an upgrade
    assert unit["ExecStart"][0].endswith(" start")
    assert unit["ExecReload"][0].endswith(" upgrade")
    assert unit["KillMode"] == ["mixed"]  # SIGTERM to the main: it drains its workers
    for sandboxing in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome"):
        assert sandboxing in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    sozu = Path(sys.executable).parent / "sozu"
    if not sozu.exists():
        pytest.skip("the sozu console script is not installed next to this interpreter")
    unit = tmp_path / "sozu.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/sozu", str(sozu)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in result.stderr.splitlines() if "sozu.service" in line]
    assert result.returncode == 0 and not complaints, result.stderr
