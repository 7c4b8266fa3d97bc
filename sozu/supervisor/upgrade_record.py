"""The upgrade record: what an old main process hands to its successor, as JSON (no IO here).

The top-level keys and each worker entry are Sōzu's `UpgradeData` (serde field order, run states
as PascalCase variant names); `config` and `state` use our own encodings, since a Rust main can
never hand over to a Python one: `config` is the validated `Config` dataclass written field by
field, `state` the requests that rebuild the `ConfigState` as state-file records plus the request
counts. `listeners` is ours too: the supervisor, not the workers, holds the listening sockets.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sozu.command.config_model import Config
from sozu.command.errors import SozuError
from sozu.command.proto import Request, RunState, WorkerRequest
from sozu.command.state_file import RecordError, from_serde, to_serde

RUN_STATE_NAMES: dict[RunState.ValueType, str] = {
    RunState.RUNNING: "Running",
    RunState.STOPPING: "Stopping",
    RunState.STOPPED: "Stopped",
    RunState.NOT_ANSWERING: "NotAnswering",
}
_RUN_STATES = {name: value for value, name in RUN_STATE_NAMES.items()}
LISTENER_KINDS = ("http", "tls", "tcp", "udp")


class UpgradeRecordError(SozuError):
    """The record cannot be read; the message names the key path at fault."""


@dataclass
class WorkerEntry:
    """One worker the new main adopts: its process and the old main's ends of its sockets."""

    channel_fd: int
    pid: int
    id: int
    run_state: RunState.ValueType
    scm_fd: int


@dataclass
class UpgradeRecord:
    command_socket_fd: int
    config: Config
    next_client_id: int
    next_session_id: int
    next_task_id: int
    next_worker_id: int
    workers: list[WorkerEntry]
    requests: list[Request]
    request_counts: collections.Counter[str]
    listeners: dict[str, dict[str, int]]  # kind -> address text -> fd
    boot_generation: int = 0

    def fds(self) -> list[int]:
        """Every descriptor the record names (they must reach the new main, same numbers)."""
        fds = [self.command_socket_fd]
        for worker in self.workers:
            fds.extend((worker.channel_fd, worker.scm_fd))
        for table in self.listeners.values():
            fds.extend(table.values())
        return fds


# --- encoding ------------------------------------------------------------------------------


def encode(record: UpgradeRecord) -> bytes:
    document = {
        "command_socket_fd": record.command_socket_fd,
        "config": _dump(record.config, Config),
        "next_client_id": record.next_client_id,
        "next_session_id": record.next_session_id,
        "next_task_id": record.next_task_id,
        "next_worker_id": record.next_worker_id,
        "workers": [
            {
                "channel_fd": worker.channel_fd,
                "pid": worker.pid,
                "id": worker.id,
                "run_state": RUN_STATE_NAMES[worker.run_state],
                "scm_fd": worker.scm_fd,
            }
            for worker in record.workers
        ],
        "state": {
            "requests": [
                to_serde(WorkerRequest(id=f"SAVE-{n}", content=request))
                for n, request in enumerate(record.requests)
            ],
            "request_counts": dict(record.request_counts),
        },
        "listeners": {kind: dict(record.listeners.get(kind, {})) for kind in LISTENER_KINDS},
        "boot_generation": record.boot_generation,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def _dump(value: object, hint: Any) -> Any:
    if value is None:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hints = typing.get_type_hints(type(value))
        return {
            f.name: _dump(getattr(value, f.name), hints[f.name])
            for f in dataclasses.fields(value)
            if f.compare  # `warnings` is not part of the configuration
        }
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_dump(item, None) for item in value]
    if isinstance(value, dict | types.MappingProxyType):
        return {str(key): _dump(item, None) for key, item in value.items()}
    return value


# --- decoding ------------------------------------------------------------------------------


def decode(data: bytes) -> UpgradeRecord:
    """Parse a record; UpgradeRecordError naming the key path when anything is off."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise UpgradeRecordError(f"upgrade record is not JSON: {error}") from None
    top = _object(document, "record")
    state = _object(_key(top, "state", "record"), "state")
    workers = []
    for index, raw in enumerate(_list(_key(top, "workers", "record"), "workers")):
        where = f"workers[{index}]"
        entry = _object(raw, where)
        name = _key(entry, "run_state", where)
        if name not in _RUN_STATES:
            raise UpgradeRecordError(f"{where}.run_state: unknown run state {name!r}")
        workers.append(
            WorkerEntry(
                channel_fd=_int(entry, "channel_fd", where),
                pid=_int(entry, "pid", where),
                id=_int(entry, "id", where),
                run_state=_RUN_STATES[name],
                scm_fd=_int(entry, "scm_fd", where),
            )
        )
    requests = []
    for index, raw in enumerate(_list(_key(state, "requests", "state"), "state.requests")):
        try:
            requests.append(from_serde(WorkerRequest, raw).content)
        except (RecordError, ValueError) as error:
            raise UpgradeRecordError(f"state.requests[{index}]: {error}") from None
    counts = _object(_key(state, "request_counts", "state"), "state.request_counts")
    listeners_raw = _object(_key(top, "listeners", "record"), "listeners")
    listeners: dict[str, dict[str, int]] = {}
    for kind in LISTENER_KINDS:
        table = _object(listeners_raw.get(kind, {}), f"listeners.{kind}")
        listeners[kind] = {address: _int(table, address, f"listeners.{kind}") for address in table}
    boot_generation = top.get("boot_generation", 0)  # serde(default), as Sōzu
    if not isinstance(boot_generation, int) or isinstance(boot_generation, bool):
        raise UpgradeRecordError("record.boot_generation: expected an integer")
    return UpgradeRecord(
        command_socket_fd=_int(top, "command_socket_fd", "record"),
        config=_load(_key(top, "config", "record"), Config, "config"),
        next_client_id=_int(top, "next_client_id", "record"),
        next_session_id=_int(top, "next_session_id", "record"),
        next_task_id=_int(top, "next_task_id", "record"),
        next_worker_id=_int(top, "next_worker_id", "record"),
        workers=workers,
        requests=requests,
        request_counts=collections.Counter(
            {name: _int(counts, name, "state.request_counts") for name in counts}
        ),
        listeners=listeners,
        boot_generation=boot_generation,
    )


def _key(table: dict[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise UpgradeRecordError(f"{where}.{key}: missing")
    return table[key]


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UpgradeRecordError(f"{where}: expected an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise UpgradeRecordError(f"{where}: expected a list")
    return value


def _int(table: dict[str, Any], key: str, where: str) -> int:
    value = _key(table, key, where)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UpgradeRecordError(f"{where}.{key}: expected an integer")
    return value


def _load(value: Any, hint: Any, where: str) -> Any:
    """Rebuild a value of type `hint` from its JSON form (the inverse of `_dump`)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        problems = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _load(value, option, where)
            except UpgradeRecordError as error:
                problems.append(str(error))
        raise UpgradeRecordError("; ".join(problems) or f"{where}: unexpected null")
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        table = _object(value, where)
        hints = typing.get_type_hints(hint)
        known = {f.name for f in dataclasses.fields(hint) if f.compare}
        unknown = sorted(set(table) - known)
        if unknown:
            raise UpgradeRecordError(f"{where}: unknown key {unknown[0]!r} for {hint.__name__}")
        arguments = {name: _load(table[name], hints[name], f"{where}.{name}") for name in table}
        try:
            return hint(**arguments)
        except TypeError as error:
            raise UpgradeRecordError(f"{where}: {error}") from None
    if origin is tuple:
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(
            _load(entry, item, f"{where}[{n}]") for n, entry in enumerate(_list(value, where))
        )
    if origin is dict:
        _key_type, item = typing.get_args(hint)
        return {k: _load(v, item, f"{where}.{k}") for k, v in _object(value, where).items()}
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            raise UpgradeRecordError(f"{where}: {value!r} is not a {hint.__name__}") from None
    if hint is Path:
        if not isinstance(value, str):
            raise UpgradeRecordError(f"{where}: expected a path string")
        return Path(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise UpgradeRecordError(f"{where}: expected {hint.__name__}")
        return value
    if value is None:
        raise UpgradeRecordError(f"{where}: unexpected null")
    return value
