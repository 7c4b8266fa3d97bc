"""The state file: Sōzu-compatible save and load of a ConfigState.

A state file is the list of Requests that rebuilds a state (`ConfigState.requests()`), each
wrapped in a `WorkerRequest` with id `SAVE-n` (n from 0) and written as one JSON record followed
by `\\n\\0`. The JSON is the one Sōzu's Rust types produce through serde, not protobuf's
canonical JSON, so files move between Sōzu and sozu-py in both directions:

- a message is an object with every field in `.proto` declaration order (then its oneofs);
- an unset optional field is `null`, a repeated field a list, a map an object sorted by key;
- an enum is its number, bytes are a list of integers;
- a oneof is one key named after the oneof whose value is `{"VARIANT": value}`, the variant
  being the field name in upper snake case (`ADD_CLUSTER`, `V4`), or `null` when unset.

The codec walks message descriptors, so it serves every message of `command.proto`. Reading is
lenient where that is safe: unknown fields are ignored, a missing or null optional is unset, a
missing repeated field or map is empty; a missing required field, a wrong type, an unknown enum
value or oneof variant makes the record corrupt. Loading reports each corrupt or refused record
with its index and goes on with the next, where Sōzu stops or skips silently.

File IO is plain and bounded: a save writes a temporary file beside the target and renames it
over the target, so a crash never leaves half a state; a load refuses anything but a regular
file, so it cannot block on a FIFO.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor
from google.protobuf.message import Message

from sozu.command.errors import SozuError
from sozu.command.proto import Request, WorkerRequest
from sozu.command.state import Applied, ConfigState, StateError

if TYPE_CHECKING:
    from google._upb import _message as _upb

    _Field: TypeAlias = FieldDescriptor | _upb.FieldDescriptor
    _Oneof: TypeAlias = OneofDescriptor | _upb.OneofDescriptor
    _Message: TypeAlias = Descriptor | _upb.Descriptor

RECORD_SEPARATOR = b"\n\0"
SAVE_PREFIX = "SAVE"

_M = TypeVar("_M", bound=Message)
_T = FieldDescriptor
_INT32_TYPES = frozenset(
    {_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32, _T.TYPE_UINT32, _T.TYPE_FIXED32}
)
_SIGNED_TYPES = frozenset(
    {
        _T.TYPE_INT32,
        _T.TYPE_SINT32,
        _T.TYPE_SFIXED32,
        _T.TYPE_INT64,
        _T.TYPE_SINT64,
        _T.TYPE_SFIXED64,
    }
)


class RecordError(SozuError, ValueError):
    """A record that is not a valid serde-JSON message; the message names the field."""

    def __init__(self, message: str, record_id: str | None = None) -> None:
        super().__init__(message)
        self.record_id = record_id  # the record's id, when its JSON had one


class StateFileError(SozuError):
    """A state file that cannot be read or written at all."""


# --- names -------------------------------------------------------------------------------


def variant_key(field_name: str) -> str:
    """The serde key of a oneof variant: prost's UpperCamelCase name in SCREAMING_SNAKE_CASE.

    `add_cluster` -> `ADD_CLUSTER`, `v4` -> `V4`, `Logging` -> `LOGGING`.
    """
    camel = "".join(word[:1].upper() + word[1:].lower() for word in _words(field_name))
    out: list[str] = []
    for index, char in enumerate(camel):
        if index and char.isupper():
            out.append("_")
        out.append(char.upper())
    return "".join(out)


def _words(name: str) -> list[str]:
    words: list[str] = []
    current = ""
    for index, char in enumerate(name):
        if not char.isalnum():
            if current:
                words.append(current)
            current = ""
            continue
        previous = name[index - 1] if index else ""
        following = name[index + 1] if index + 1 < len(name) else ""
        boundary = char.isupper() and (
            previous.islower() or (previous.isupper() and following.islower())
        )
        if boundary and current:
            words.append(current)
            current = ""
        current += char
    if current:
        words.append(current)
    return words


def _variant_field(oneof: _Oneof, key: str) -> _Field | None:
    for candidate in oneof.fields:
        if variant_key(candidate.name) == key:
            return candidate
    return None


def _is_map(field: _Field) -> bool:
    entry = field.message_type
    return field.is_repeated and entry is not None and entry.GetOptions().map_entry


def _message_type(field: _Field) -> _Message:
    entry = field.message_type
    assert entry is not None, field.full_name
    return entry


# --- encoding ----------------------------------------------------------------------------


def to_serde(message: Message) -> dict[str, Any]:
    """A message as the JSON value tree serde gives for Sōzu's Rust type."""
    descriptor = message.DESCRIPTOR
    out: dict[str, Any] = {}
    for fd in descriptor.fields:
        if fd.containing_oneof is None:
            out[fd.name] = _encode_field(message, fd)
    for oneof in descriptor.oneofs:
        which = message.WhichOneof(oneof.name)
        if which is None:
            out[oneof.name] = None
        else:
            variant = descriptor.fields_by_name[which]
            out[oneof.name] = {variant_key(which): _encode_value(variant, getattr(message, which))}
    return out


def _encode_field(message: Message, fd: _Field) -> Any:
    value = getattr(message, fd.name)
    if _is_map(fd):
        value_field = _message_type(fd).fields_by_name["value"]
        return {_map_key_text(key): _encode_value(value_field, value[key]) for key in sorted(value)}
    if fd.is_repeated:
        return [_encode_value(fd, item) for item in value]
    if not fd.is_required and not message.HasField(fd.name):
        return None
    return _encode_value(fd, value)


def _encode_value(fd: _Field, value: Any) -> Any:
    if fd.type == _T.TYPE_MESSAGE:
        return to_serde(value)
    if fd.type == _T.TYPE_BYTES:
        return list(value)
    return value


def _map_key_text(key: object) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def encode_record(request: WorkerRequest) -> bytes:
    """One record's JSON text (UTF-8, compact, non-ASCII written as is), without separator."""
    text = json.dumps(to_serde(request), separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def encode_requests(requests: Iterable[Request], prefix: str = SAVE_PREFIX) -> bytes:
    """A whole file: each Request as record `PREFIX-n`, every record followed by `\\n\\0`."""
    return b"".join(
        encode_record(WorkerRequest(id=f"{prefix}-{n}", content=request)) + RECORD_SEPARATOR
        for n, request in enumerate(requests)
    )


def dump_state(state: ConfigState) -> bytes:
    """The state file contents for `state`."""
    return encode_requests(state.requests())


# --- decoding ----------------------------------------------------------------------------


def from_serde(message_class: type[_M], value: object) -> _M:
    """Build a message from its serde JSON value tree, or raise RecordError."""
    message = message_class()
    _decode_message(message, value, message_class.DESCRIPTOR.name)
    return message


def _decode_message(message: Message, value: object, path: str) -> None:
    if not isinstance(value, dict):
        raise RecordError(f"{path}: expected an object, found {_json_kind(value)}")
    descriptor = message.DESCRIPTOR
    for fd in descriptor.fields:
        if fd.containing_oneof is not None:
            continue
        raw = value.get(fd.name)
        where = f"{path}.{fd.name}"
        if raw is None:
            if fd.is_required:
                raise RecordError(f"{where}: missing required field")
            continue
        if _is_map(fd):
            _decode_map(getattr(message, fd.name), fd, raw, where)
        elif fd.is_repeated:
            if not isinstance(raw, list):
                raise RecordError(f"{where}: expected a list, found {_json_kind(raw)}")
            target = getattr(message, fd.name)
            for index, item in enumerate(raw):
                if fd.type == _T.TYPE_MESSAGE:
                    _decode_message(target.add(), item, f"{where}[{index}]")
                else:
                    target.append(_decode_scalar(fd, item, f"{where}[{index}]"))
        elif fd.type == _T.TYPE_MESSAGE:
            child = getattr(message, fd.name)
            child.SetInParent()
            _decode_message(child, raw, where)
        else:
            setattr(message, fd.name, _decode_scalar(fd, raw, where))
    for oneof in descriptor.oneofs:
        _decode_oneof(message, oneof, value.get(oneof.name), f"{path}.{oneof.name}")


def _decode_oneof(message: Message, oneof: _Oneof, raw: object, path: str) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict) or len(raw) != 1:
        raise RecordError(f"{path}: expected an object with exactly one variant")
    ((key, inner),) = raw.items()
    variant = _variant_field(oneof, key)
    if variant is None:
        raise RecordError(f"{path}: unknown variant {key!r}")
    where = f"{path}.{key}"
    if variant.type == _T.TYPE_MESSAGE:
        child = getattr(message, variant.name)
        child.SetInParent()
        _decode_message(child, inner, where)
    else:
        setattr(message, variant.name, _decode_scalar(variant, inner, where))


def _decode_map(target: Any, fd: _Field, raw: object, path: str) -> None:
    if not isinstance(raw, dict):
        raise RecordError(f"{path}: expected an object, found {_json_kind(raw)}")
    entry = _message_type(fd)
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    for text, item in raw.items():
        key = _decode_map_key(key_field, text, path)
        where = f"{path}[{text!r}]"
        if value_field.type == _T.TYPE_MESSAGE:
            _decode_message(target[key], item, where)
        else:
            target[key] = _decode_scalar(value_field, item, where)


def _decode_map_key(fd: _Field, text: str, path: str) -> object:
    if fd.type == _T.TYPE_STRING:
        return text
    if fd.type == _T.TYPE_BOOL and text in ("true", "false"):
        return text == "true"
    try:
        return _decode_scalar(fd, int(text), f"{path} key")
    except ValueError:
        raise RecordError(f"{path}: invalid map key {text!r}") from None


def _decode_scalar(fd: _Field, raw: object, path: str) -> Any:
    kind = fd.type
    if kind == _T.TYPE_BOOL:
        if isinstance(raw, bool):
            return raw
        raise RecordError(f"{path}: expected a boolean, found {_json_kind(raw)}")
    if kind == _T.TYPE_STRING:
        if isinstance(raw, str):
            return raw
        raise RecordError(f"{path}: expected a string, found {_json_kind(raw)}")
    if kind == _T.TYPE_BYTES:
        if isinstance(raw, list) and all(
            isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in raw
        ):
            return bytes(raw)
        raise RecordError(f"{path}: expected a list of bytes (0-255)")
    if kind in (_T.TYPE_FLOAT, _T.TYPE_DOUBLE):
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        raise RecordError(f"{path}: expected a number, found {_json_kind(raw)}")
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise RecordError(f"{path}: expected an integer, found {_json_kind(raw)}")
    if kind == _T.TYPE_ENUM:
        enum_type = fd.enum_type
        assert enum_type is not None, fd.full_name
        if raw not in enum_type.values_by_number:
            raise RecordError(f"{path}: {raw} is not a value of enum {enum_type.name}")
        return raw
    low, high = _int_range(kind)
    if not low <= raw <= high:
        raise RecordError(f"{path}: {raw} is out of range")
    return raw


def _int_range(kind: int) -> tuple[int, int]:
    bits = 32 if kind in _INT32_TYPES else 64
    if kind in _SIGNED_TYPES:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _refuse_constant(name: str) -> object:
    raise RecordError(f"invalid JSON number {name}")


def decode_record(data: bytes | str) -> WorkerRequest:
    """Parse one record (surrounding whitespace allowed), or raise RecordError."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text, parse_constant=_refuse_constant)
        record_id = value.get("id") if isinstance(value, dict) else None
        try:
            return from_serde(WorkerRequest, value)
        except RecordError as error:
            if isinstance(record_id, str):
                error.record_id = record_id
            raise
    except RecordError:
        raise
    except UnicodeDecodeError as error:
        raise RecordError(f"record is not UTF-8: {error}") from None
    except json.JSONDecodeError as error:
        raise RecordError(f"invalid JSON: {error}") from None
    except RecursionError:
        raise RecordError("record is nested too deeply") from None
    except (ValueError, TypeError) as error:  # a value protobuf refuses (lone surrogate...)
        raise RecordError(f"invalid value: {error}") from None


def split_records(data: bytes) -> list[bytes]:
    """The records of a file: the text between `\\0` bytes, blank ones left out.

    A JSON text never holds a raw NUL, so the split cannot cut a record; the `\\n` before each
    NUL and any trailing whitespace are kept with the record and ignored by the JSON parser.
    A last record without its terminator is still read.
    """
    return [chunk for chunk in data.split(b"\0") if chunk.strip()]


# --- loading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadError:
    """A record that was not loaded: corrupt (cannot be decoded) or refused by the state."""

    index: int  # position among the file's records, from 0 (SAVE-n in a file we wrote)
    id: str | None  # the record's id, when it could be decoded
    reason: str
    refused: bool

    def __str__(self) -> str:
        name = f"record {self.index}" + (f" ({self.id})" if self.id is not None else "")
        return f"{name} {'refused' if self.refused else 'corrupt'}: {self.reason}"


@dataclass(frozen=True)
class LoadedRecord:
    """A record that the state accepted."""

    index: int
    request: WorkerRequest
    applied: Applied


@dataclass
class LoadResult:
    """What a load did: the state it loaded into, the accepted records and the errors."""

    state: ConfigState
    ok: list[LoadedRecord] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)

    @property
    def requests_ok(self) -> list[WorkerRequest]:
        """The accepted records, in file order (what a supervisor forwards to its workers)."""
        return [record.request for record in self.ok]


def parse_records(data: bytes) -> tuple[list[tuple[int, WorkerRequest]], list[LoadError]]:
    """Decode every record of a file: (index, WorkerRequest) pairs and the corrupt ones."""
    parsed: list[tuple[int, WorkerRequest]] = []
    errors: list[LoadError] = []
    for index, chunk in enumerate(split_records(data)):
        try:
            parsed.append((index, decode_record(chunk)))
        except RecordError as error:
            errors.append(LoadError(index, error.record_id, str(error), refused=False))
    return parsed, errors


def apply_records(
    state: ConfigState, records: Iterable[tuple[int, WorkerRequest]]
) -> tuple[list[LoadedRecord], list[LoadError]]:
    """Apply decoded records in order; a refused one is reported and leaves `state` as it was."""
    ok: list[LoadedRecord] = []
    errors: list[LoadError] = []
    for index, request in records:
        try:
            applied = state.apply(request.content)
        except StateError as error:
            errors.append(LoadError(index, request.id, error.message, refused=True))
        else:
            ok.append(LoadedRecord(index, request, applied))
    return ok, errors


def load_records(data: bytes, state: ConfigState | None = None) -> LoadResult:
    """Decode and apply the records of a state file's contents (into a new state by default)."""
    target = ConfigState() if state is None else state
    parsed, corrupt = parse_records(data)
    ok, refused = apply_records(target, parsed)
    errors = sorted([*corrupt, *refused], key=lambda error: error.index)
    return LoadResult(target, ok, errors)


def read_state_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a state file; refuses anything but a regular file (a FIFO would block)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in a client's path
        raise StateFileError(f"cannot open state file {os.fspath(path)}: {error}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StateFileError(f"state file {os.fspath(path)} is not a regular file")
        chunks: list[bytes] = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as error:
        raise StateFileError(f"cannot read state file {os.fspath(path)}: {error}") from None
    finally:
        os.close(fd)


def load_state(
    source: str | os.PathLike[str] | bytes, state: ConfigState | None = None
) -> LoadResult:
    """Load a state file (a path, or its contents as bytes) into `state` or a new state.

    Raises StateFileError only when the file cannot be read; record problems are in
    `LoadResult.errors`, and every other record is applied.
    """
    data = source if isinstance(source, bytes) else read_state_file(source)
    return load_records(data, state)


# --- saving ------------------------------------------------------------------------------


def save_state(path: str | os.PathLike[str], state: ConfigState) -> int:
    """Write `state` to `path` and return the number of records written.

    The file is written beside the target under a temporary name, synced, then renamed over
    the target, so readers see the old file or the new one, never a part. A new file is made
    0600 (it holds private keys); an existing file keeps its mode. When the folder is not
    writable but the file is, the file is rewritten in place instead.
    """
    requests = state.requests()
    data = encode_requests(requests)
    try:
        target = os.path.realpath(os.fspath(path))
    except ValueError as error:  # a NUL byte in a client's path
        raise StateFileError(f"cannot save state to {os.fspath(path)}: {error}") from None
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o600
    except OSError as error:
        raise StateFileError(f"cannot save state to {target}: {error}") from None
    try:
        _replace_atomically(target, data, mode)
    except PermissionError:
        _rewrite_in_place(target, data, mode)
    except OSError as error:
        raise StateFileError(f"cannot save state to {target}: {error}") from None
    return len(requests)


def _replace_atomically(target: str, data: bytes, mode: int) -> None:
    folder, name = os.path.split(target)
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _sync_folder(folder)


def _rewrite_in_place(target: str, data: bytes, mode: int) -> None:
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        raise StateFileError(f"cannot save state to {target}: {error}") from None


def _sync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
