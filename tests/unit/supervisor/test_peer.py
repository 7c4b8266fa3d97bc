"""Peer credentials of command-socket clients (SO_PEERCRED, account name, /proc comm)."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sozu.supervisor import peer
from sozu.supervisor.peer import PeerCredentials, peer_credentials, process_comm, user_name


def own_comm() -> str:
    return Path("/proc/self/comm").read_text().rstrip("\n")


def test_socketpair_gives_our_own_credentials() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        creds = peer_credentials(left)
    assert (creds.uid, creds.gid, creds.pid) == (os.getuid(), os.getgid(), os.getpid())
    assert creds.user == pwd.getpwuid(os.getuid()).pw_name
    assert creds.account == creds.user
    assert creds.comm == own_comm()
    assert creds.available


def test_accepted_unix_socket_sees_the_connecting_process(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    code = (
        "import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
        "sys.stdout.write('ok\\n'); sys.stdout.flush(); s.recv(1)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True)
    try:
        connection, _ = server.accept()
        with connection:
            creds = peer_credentials(connection)
            assert creds.pid == child.pid
            assert creds.uid == os.getuid()
            assert creds.comm == Path(f"/proc/{child.pid}/comm").read_text().rstrip("\n")
            connection.send(b"x")
    finally:
        child.wait(timeout=10)
        server.close()


def test_never_raises_on_a_closed_or_foreign_socket() -> None:
    left, right = socket.socketpair()
    right.close()
    left.close()
    assert peer_credentials(left) == PeerCredentials.unavailable()
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with tcp:
        creds = peer_credentials(tcp)  # not a unix socket: whatever the kernel says, no raise
    assert isinstance(creds, PeerCredentials)


def test_missing_so_peercred(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(socket, "SO_PEERCRED", raising=False)
    left, right = socket.socketpair()
    with left, right:
        creds = peer_credentials(left)
    assert creds == PeerCredentials.unavailable()
    assert creds.user == "unknown" and creds.account is None and not creds.available


def test_user_name_unknown_for_unmapped_uid() -> None:
    uid = 4_000_000_000
    try:
        pwd.getpwuid(uid)
    except KeyError:
        assert user_name(uid) == "unknown"
    assert user_name(None) == "unknown"
    assert user_name(0) == pwd.getpwuid(0).pw_name


def test_process_comm(tmp_path: Path) -> None:
    assert process_comm(os.getpid()) == own_comm()
    assert process_comm(None) is None
    assert process_comm(0) is None
    assert process_comm(-5) is None
    # a pid that does not exist (a fake /proc keeps this deterministic)
    assert process_comm(123, proc=tmp_path) is None
    # stat readable but comm missing, then both present
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "stat").write_text("77 (x) S")
    assert process_comm(77, proc=tmp_path) is None
    (tmp_path / "77" / "comm").write_bytes(b"sozu\n")
    assert process_comm(77, proc=tmp_path) == "sozu"
    (tmp_path / "77" / "comm").write_bytes(b"\n")
    assert process_comm(77, proc=tmp_path) is None
    (tmp_path / "77" / "comm").write_bytes(b"bad\xffname\n")
    assert process_comm(77, proc=tmp_path) == "bad\ufffdname"


def test_gone_process_has_no_comm() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    assert process_comm(child.pid) is None


def test_unknown_constant() -> None:
    assert peer.UNKNOWN == "unknown"
