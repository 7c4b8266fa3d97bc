"""Adopted processes: a worker the main process did not start is watched and killed safely."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from sozu.supervisor.processes import EXIT_UNKNOWN, AdoptedProcess


def orphan_sleep() -> int:
    """The pid of a `sleep` whose parent already exited: not our child."""
    output = subprocess.run(
        ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
        timeout=5,
    )
    return int(output.stdout.strip())


def test_a_non_child_is_watched_and_killed_through_its_pidfd() -> None:
    pid = orphan_sleep()
    adopted = AdoptedProcess(pid)
    try:
        assert adopted.pidfd is not None
        assert adopted.poll() is None
        with pytest.raises(TimeoutError):
            adopted.wait(timeout=0.1)
        adopted.send_signal(signal.SIGKILL)
        assert adopted.wait(timeout=5) == EXIT_UNKNOWN
        assert adopted.returncode == EXIT_UNKNOWN
        adopted.send_signal(signal.SIGKILL)  # known gone: nothing is sent, nothing raised
    finally:
        adopted.close()
        if adopted.returncode is None:
            os.kill(pid, signal.SIGKILL)


def test_without_pidfd_psutil_watches_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pidfd(_pid: int) -> int:
        raise OSError("pidfd_open is not available")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    pid = orphan_sleep()
    adopted = AdoptedProcess(pid)
    try:
        assert adopted.pidfd is None
        assert adopted.poll() is None
        adopted.kill()
        assert adopted.wait(timeout=5) == EXIT_UNKNOWN
    finally:
        if adopted.returncode is None:
            os.kill(pid, signal.SIGKILL)


def test_a_process_already_gone_is_exited_at_once() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    adopted = AdoptedProcess(child.pid)
    assert adopted.poll() == EXIT_UNKNOWN
