"""`sozu demo` as the README runs it: supervisor, workers and demo backend, one answer shown."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil

from sozu.command.config import demo_config_path
from tests.e2e.conftest import free_port, wait_for


def demo_copy_on_free_ports(tmp_path: Path) -> Path:
    text = demo_config_path().read_text()
    for port in ("8080", "8081", "8443"):
        text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return path


def test_demo_once_shows_an_answer_through_the_proxy(tmp_path: Path) -> None:
    config = demo_copy_on_free_ports(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "sozu", "-c", str(config), "demo", "--once"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "$ curl -H 'Host: localhost' http://127.0.0.1:" in result.stdout
    assert result.stdout.count("HTTP/1.1 200 OK\nHello from the sozu-py demo backend") == 2
    assert "$ curl -k --resolve localhost:" in result.stdout  # the HTTPS frontend added live
    assert f"sozu -c {config} status" in result.stdout
    assert not (tmp_path / "sozu.sock").exists()  # the supervisor was shut down


def test_demo_stops_everything_on_sigterm(tmp_path: Path) -> None:
    config = demo_copy_on_free_ports(tmp_path)
    demo = subprocess.Popen(
        [sys.executable, "-m", "sozu", "-c", str(config), "demo"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        output = demo.stdout
        assert output is not None
        wait_for(lambda: "Ctrl-C stops the demo." in (output.readline() or "x"), 60, "demo")
        status = subprocess.run(
            [sys.executable, "-m", "sozu", "-c", str(config), "status"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        family = [p.pid for p in psutil.Process(demo.pid).children(recursive=True)]
        assert len(family) >= 2  # the supervisor and its worker
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 0
        wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                                 for p in family), 20, "demo processes to exit")  # fmt: skip
    finally:
        if demo.poll() is None:
            demo.kill()
