"""Worker processes as the supervisor sees them: its own children, or ones it adopted.

A main process started by a main upgrade inherits workers it did not start: they are not its
children, so it can neither reap them nor read their exit code. `AdoptedProcess` offers the slice
of `subprocess.Popen` the worker pool uses (`pid`, `returncode`, `poll`, `wait`, `send_signal`)
for such a process. With a pidfd (Linux 5.3+) the exit is seen and signals are sent through a
descriptor that names this very process, so a recycled pid can never be hit. Without one, psutil
polls, and a signal is only sent while the process still has the start time seen at adoption.
An adopted process that exits stays a zombie until its real parent (an init, systemd) reaps it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from typing import Protocol

import psutil

EXIT_UNKNOWN = -255
"""`returncode` of an adopted process that exited: only its real parent may read the code."""

_POLL_SECONDS = 0.1


class ProcessHandle(Protocol):
    """What the worker pool needs of a process (`subprocess.Popen` has it all)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...


class AdoptedProcess:
    """A process that is not our child: watched through a pidfd, else by polling psutil."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.pidfd: int | None = None
        self._psutil: psutil.Process | None = None
        self._created: float | None = None
        try:
            self.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self.returncode = EXIT_UNKNOWN  # already gone
        except (AttributeError, OSError):
            self._adopt_with_psutil()

    def _adopt_with_psutil(self) -> None:
        try:
            self._psutil = psutil.Process(self.pid)
            self._created = self._psutil.create_time()
        except psutil.Error:
            self.returncode = EXIT_UNKNOWN

    def poll(self) -> int | None:
        if self.returncode is None and self._exited(0.0):
            self._finish()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait until the process exits; `TimeoutError` past `timeout` seconds."""
        if self.returncode is not None:
            return self.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = _POLL_SECONDS
            if deadline is not None:
                step = max(0.0, min(step, deadline - time.monotonic()))
            if self._exited(step):
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"process {self.pid} still runs after {timeout} s")
        self._finish()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the process unless it is known gone (never a process that reused its pid)."""
        if self.returncode is not None:
            return
        if self.pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, sig)
            return
        if self._psutil is not None and self._same_process():
            with contextlib.suppress(psutil.Error):
                self._psutil.send_signal(sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def _exited(self, timeout: float) -> bool:
        if self.pidfd is not None:
            readable, _, _ = select.select([self.pidfd], [], [], timeout)
            return bool(readable)
        if not self._same_process():
            return True
        if timeout > 0:
            time.sleep(timeout)
        return False

    def _same_process(self) -> bool:
        """Still alive and not a zombie, and still the process we adopted."""
        if self._psutil is None:
            return False
        try:
            return (
                self._psutil.create_time() == self._created
                and self._psutil.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False

    def _finish(self) -> None:
        self.returncode = EXIT_UNKNOWN
        self.close()
