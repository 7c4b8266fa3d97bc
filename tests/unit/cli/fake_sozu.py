"""A scripted stand-in for the supervisor's command socket, built from the schema and the framing
rule alone (8-byte little-endian length counting itself, then the payload): no sozu code.

`FakeSozu(path, script)` listens on a unix socket in a thread, accepts clients one after the
other, reads one Request from each and plays the next script: a list of steps, each a
`Response` to send, raw `bytes` to write, a float (seconds to sleep), `READ` (wait for the
client's next Request) or `CLOSE`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from sozu.command.proto import Request, Response, ResponseStatus

CLOSE = "close"
READ = "read"  # read the client's next Request before going on
Step = Response | bytes | float | str


def frame(payload: bytes) -> bytes:
    return struct.pack("<Q", len(payload) + 8) + payload


def ok(message: str = "", **content: object) -> Response:
    from sozu.command.proto import ResponseContent

    answer = Response(status=ResponseStatus.OK, message=message)
    if content:
        answer.content.CopyFrom(ResponseContent(**content))  # type: ignore[arg-type]
    return answer


def processing(message: str = "", **content: object) -> Response:
    answer = ok(message, **content)
    answer.status = ResponseStatus.PROCESSING
    return answer


def failure(message: str) -> Response:
    return Response(status=ResponseStatus.FAILURE, message=message)


def _read_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client hung up")
        data += chunk
    return data


class FakeSozu:
    """Serves `scripts` (one per accepted client, in order) on a unix socket."""

    def __init__(self, path: Path, *scripts: Sequence[Step]) -> None:
        self.path = path
        self.scripts = list(scripts)
        self.requests: list[Request] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.listener.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeSozu:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()

    def _serve(self) -> None:
        while self.scripts and not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            script = self.scripts.pop(0)
            conn.settimeout(10)  # a client slow to send its request (a busy machine) is no error
            with conn:
                try:
                    self._read_request(conn)
                    self._play(conn, script)
                except OSError:
                    continue

    def _read_request(self, conn: socket.socket) -> None:
        (length,) = struct.unpack("<Q", _read_exact(conn, 8))
        request = Request()
        request.ParseFromString(_read_exact(conn, length - 8))
        self.requests.append(request)

    def _play(self, conn: socket.socket, script: Sequence[Step]) -> None:
        for step in script:
            if isinstance(step, Response):
                conn.sendall(frame(step.SerializeToString()))
            elif isinstance(step, bytes):
                conn.sendall(step)
            elif isinstance(step, float):
                self._stop.wait(step)
            elif step == READ:
                self._read_request(conn)
            elif step == CLOSE:
                return
        # Keep the connection open until the client goes away or the test ends.
        conn.settimeout(0.1)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                if not conn.recv(4096):
                    return
            time.sleep(0)
