"""systemd readiness notifications (`sd_notify(3)`), without libsystemd.

When `$NOTIFY_SOCKET` is set (a unit with `Type=notify`), the supervisor sends `READY=1` once
every worker answered its start-up status, `RELOADING=1` around a configuration reload or a state
load, and `STOPPING=1` when it begins to shut down. The socket is a datagram unix socket, either a
path or a Linux abstract name written with a leading `@`. Without the variable nothing is sent;
a failed send is reported to the caller, which logs it and goes on.
"""

from __future__ import annotations

import os
import socket
import time

READY = "READY=1"
STOPPING = "STOPPING=1"


def reloading() -> str:
    """`RELOADING=1` with the monotonic timestamp that systemd 253+ asks for."""
    return f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send `state` to `$NOTIFY_SOCKET`; False when the variable is unset, OSError on failure."""
    target = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not target:
        return False
    address = "\0" + target[1:] if target.startswith("@") else target
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state.encode(), address)
    return True
