"""DESIGN.md §4 import rules, checked on the source text with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sozu"
SANS_IO = [
    "command/framing.py",
    "command/state.py",
    "worker/router.py",
    "worker/load_balancing.py",
    "worker/protocol",
]
FORBIDDEN_IN_SANS_IO = {"asyncio", "socket", "ssl", "os", "time"}
LAYERS = {
    "command": {"command"},
    "supervisor": {"command", "supervisor"},
    "worker": {"command", "worker"},
    "cli": {"command", "supervisor", "worker", "cli"},
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def sources() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "command/proto" not in p.as_posix()]


def test_there_are_sources_to_check() -> None:
    assert len(sources()) > 5


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layering_and_generated_module(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    layer = relative.parts[0] if len(relative.parts) > 1 else None
    for module in imported_modules(path):
        assert "command_pb2" not in module, f"{relative} imports {module}: use sozu.command.proto"
        parts = module.split(".")
        if layer in LAYERS and parts[0] == "sozu" and len(parts) > 1 and parts[1] in LAYERS:
            assert parts[1] in LAYERS[layer], f"{relative} may not import {module}"


def sans_io_files() -> list[Path]:
    found: list[Path] = []
    for entry in SANS_IO:
        target = PACKAGE / entry
        if target.is_dir():
            found.extend(target.rglob("*.py"))
        elif target.exists():
            found.append(target)
    return found


@pytest.mark.parametrize("path", sans_io_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_sans_io_modules_do_no_io(path: Path) -> None:
    bad = {m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN_IN_SANS_IO}
    assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"
