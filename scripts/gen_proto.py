"""Regenerate (or check) the committed Python bindings of proto/command.proto.

Run from anywhere: `python scripts/gen_proto.py` rewrites `sozu/command/proto/command_pb2.py` and
its `.pyi` stub with grpcio-tools' bundled protoc and mypy-protobuf; `--check` regenerates into a
temporary folder and exits 1 when the committed files differ, so stale bindings fail the tests.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "sozu" / "command" / "proto"
GENERATED = ("command_pb2.py", "command_pb2.pyi")


def generate(into: Path) -> None:
    """Run protoc on proto/command.proto, writing the bindings into `into`."""
    plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    if plugin is None:
        raise SystemExit("protoc-gen-mypy not found beside this Python: pip install mypy-protobuf")
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--python_out={into}",
        f"--mypy_out={into}",
        str(PROTO_DIR / "command.proto"),
    ]
    subprocess.run(command, check=True)


def stale_files() -> list[str]:
    """Names of the committed binding files that differ from a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        return [
            name
            for name in GENERATED
            if not (OUT_DIR / name).exists()
            or not filecmp.cmp(Path(tmp) / name, OUT_DIR / name, shallow=False)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the bindings are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(f"stale bindings: {', '.join(stale)}; run scripts/gen_proto.py", file=sys.stderr)
            return 1
        print("bindings are up to date")
        return 0
    generate(OUT_DIR)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
