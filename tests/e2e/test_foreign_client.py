"""A client built from proto/command.proto alone, in a process that cannot import sozu.

It proves the framing and the schema: the bindings are compiled from the .proto text into a
temporary folder, and the client script uses only `socket`, `struct` and those bindings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Sozu

ROOT = Path(__file__).resolve().parents[2]

CLIENT = r"""
import json, socket, struct, sys
import command_pb2 as pb

def call(sock, request):
    payload = request.SerializeToString()
    sock.sendall(struct.pack("<Q", len(payload) + 8) + payload)
    while True:
        head = b""
        while len(head) < 8:
            head += sock.recv(8 - len(head))
        (total,) = struct.unpack("<Q", head)
        body = b""
        while len(body) < total - 8:
            body += sock.recv(total - 8 - len(body))
        response = pb.Response()
        response.ParseFromString(body)
        if response.status != pb.PROCESSING:
            return response

sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
out = {}
r = call(sock, pb.Request(status=pb.Status()))
out["status"] = [pb.ResponseStatus.Name(r.status), r.message]
cluster = pb.Cluster(cluster_id="foreign", sticky_session=False, https_redirect=False,
                     load_balancing=pb.ROUND_ROBIN)
r = call(sock, pb.Request(add_cluster=cluster))
out["add_cluster"] = pb.ResponseStatus.Name(r.status)
r = call(sock, pb.Request(list_workers=pb.ListWorkers()))
out["workers"] = [pb.RunState.Name(w.run_state) for w in r.content.workers.vec]
r = call(sock, pb.Request(remove_cluster="absent-cluster"))
out["remove_absent"] = [pb.ResponseStatus.Name(r.status), r.message]
r = call(sock, pb.Request(query_cluster_by_id="foreign"))
out["query"] = pb.ResponseStatus.Name(r.status)
print(json.dumps(out))
"""


@pytest.fixture
def foreign_bindings(tmp_path: Path) -> Path:
    grpc_tools = pytest.importorskip("grpc_tools.protoc")
    out = tmp_path / "foreign"
    out.mkdir()
    code = grpc_tools.main(
        ["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", str(ROOT / "proto/command.proto")]
    )
    assert code == 0
    (out / "client.py").write_text(CLIENT)
    return out


def test_client_from_the_schema_alone(make_sozu, foreign_bindings: Path) -> None:
    sozu: Sozu = make_sozu(workers=2)
    # -I: no PYTHONPATH, no cwd on sys.path; the script also blocks any import of sozu.
    result = subprocess.run(
        [sys.executable, "-I", "-c",
         f"import sys; sys.path.insert(0, {str(foreign_bindings)!r}); "
         "import runpy; runpy.run_path(sys.path[0] + '/client.py', run_name='__main__')",
         str(sozu.socket_path)],
        capture_output=True, text=True, timeout=60, cwd=foreign_bindings,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert answers["status"][0] == "OK"
    assert answers["add_cluster"] == "OK"
    assert answers["workers"] == ["RUNNING", "RUNNING"]
    assert answers["remove_absent"][0] == "FAILURE"
    assert "absent-cluster" in answers["remove_absent"][1]
    assert answers["query"] == "OK"
