"""Who is on the other end of a command-socket connection.

The supervisor attributes every audited command to the process that sent it. Linux tells us
that process's uid, gid and pid through `SO_PEERCRED` on a connected unix socket (the values
the kernel recorded when the peer called `connect`); this module reads them once, at accept
time, together with the account name of the uid and the process's `comm` (the short command
name in `/proc/PID/comm`). Reading `comm` at accept time, before any request is handled,
keeps a pid that is recycled later from lending another program's name to the session.

Nothing here raises: a platform without `SO_PEERCRED`, a getsockopt failure or an unreadable
`/proc` entry degrade to `None` / `"unknown"`, and the audit log says so.
"""

from __future__ import annotations

import pwd
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

UNKNOWN = "unknown"
"""The text the audit log shows for an attribute that could not be read."""

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


@dataclass(frozen=True)
class PeerCredentials:
    """The peer process of one command-socket connection, as seen at accept time."""

    uid: int | None
    gid: int | None
    pid: int | None
    user: str
    """Account name of `uid`, or `"unknown"` when there is no uid or no such account."""
    comm: str | None
    """`/proc/PID/comm` read at accept time, None when unreadable."""

    @property
    def available(self) -> bool:
        """True when SO_PEERCRED gave credentials (the uid is known)."""
        return self.uid is not None

    @property
    def account(self) -> str | None:
        """The account name, None when it could not be resolved (the JSON sink's `null`)."""
        return None if self.user == UNKNOWN else self.user

    @classmethod
    def unavailable(cls) -> PeerCredentials:
        """Credentials of a peer the kernel told us nothing about."""
        return cls(uid=None, gid=None, pid=None, user=UNKNOWN, comm=None)


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """Read SO_PEERCRED, the account name and `/proc/PID/comm` for a connected unix socket.

    Never raises: whatever cannot be read is None (ids, comm) or `"unknown"` (user).
    """
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return PeerCredentials.unavailable()
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size)
        pid, uid, gid = _UCRED.unpack(raw)
    except (OSError, struct.error, ValueError, TypeError):
        return PeerCredentials.unavailable()
    # The kernel reports -1 / overflow ids when the peer is in another user namespace
    # without a mapping; treat them as unknown rather than as a real uid.
    uid_value = uid if uid >= 0 else None
    gid_value = gid if gid >= 0 else None
    pid_value = pid if pid > 0 else None
    return PeerCredentials(
        uid=uid_value,
        gid=gid_value,
        pid=pid_value,
        user=user_name(uid_value),
        comm=process_comm(pid_value),
    )


def user_name(uid: int | None) -> str:
    """Account name of `uid` from the password database, `"unknown"` when there is none."""
    if uid is None:
        return UNKNOWN
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OSError, OverflowError, ValueError):
        return UNKNOWN


def process_comm(pid: int | None, proc: Path = Path("/proc")) -> str | None:
    """The command name of process `pid` (`/proc/PID/comm` without its newline), or None.

    `/proc/PID/stat` is read first: when the process is already gone there is no answer
    rather than, later on, the name of whatever process received the recycled pid.
    """
    if pid is None or pid <= 0:
        return None
    base = proc / str(pid)
    try:
        (base / "stat").read_bytes()
        raw = (base / "comm").read_bytes()
    except OSError:
        return None
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return text or None
