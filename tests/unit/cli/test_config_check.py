"""`sozu config check` and `sozu demo` as an operator runs them: a real subprocess each time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

VALID = """
worker_count = 1
[[listeners]]
protocol = "http"
address = "127.0.0.1:8080"
[clusters.app]
protocol = "http"
frontends = [{ address = "127.0.0.1:8080", hostname = "example.com" }]
backends = [{ address = "127.0.0.1:9000" }]
"""


def sozu(*words: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sozu", *words],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_valid_file(tmp_path: Path) -> None:
    result = sozu("-c", str(write(tmp_path, VALID)), "config", "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Configuration file is valid"


def test_global_flags_after_the_subcommand(tmp_path: Path) -> None:
    result = sozu("config", "check", "-c", str(write(tmp_path, VALID)), "--json")
    assert result.returncode == 0, result.stderr
    assert '"valid": true' in result.stdout


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID + "\n[clusters.broken\n")
    result = sozu("-c", str(path), "config", "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert "line 11, column 17" in result.stderr


def test_bad_value_names_the_key_and_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace('protocol = "http"\naddress', 'protocol = "htp"\naddress'))
    result = sozu("-c", str(path), "config", "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "listeners[0].protocol" in result.stderr
    assert '"htp"' in result.stderr
    assert result.stderr.count("\n") == 1


def test_unknown_top_level_key_is_a_warning(tmp_path: Path) -> None:
    result = sozu("-c", str(write(tmp_path, "not_a_sozu_key = 1\n" + VALID)), "config", "check")
    assert result.returncode == 0
    assert "warning:" in result.stderr and "not_a_sozu_key" in result.stderr


def test_missing_file_and_missing_flag(tmp_path: Path) -> None:
    result = sozu("-c", str(tmp_path / "absent.toml"), "config", "check")
    assert result.returncode == 1
    assert "absent.toml" in result.stderr and "Traceback" not in result.stderr
    env = {"PATH": "/usr/bin:/bin"}
    result = sozu("config", "check", env=env)
    assert result.returncode == 1
    assert "-c FILE" in result.stderr


def test_config_from_environment(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SOZU_CONFIG": str(write(tmp_path, VALID))}
    assert sozu("config", "check", env=env).returncode == 0
