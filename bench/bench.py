"""Benchmark driver: nginx, HAProxy, sozu-py and the bare prototype proxying to one nginx backend.

Run through bench/run, which installs the tools. Everything listens on 127.0.0.1 on free ports,
each proxy in its own temporary directory; every process started here is stopped by its pid.
Settings come from the environment (see doc/benchmark.md):

  BENCH_SECONDS (5)   length of each wrk run        BENCH_ROUNDS (3)    rounds, medians over them
  BENCH_QUICK=1       1 round of 2 s (smoke run)    BENCH_CONNECTIONS   wrk connections (50)
  BENCH_PROXIES       nginx,haproxy,sozu,bare       BENCH_CASES         small,close,big,https
  BENCH_PROFILE=1     afterwards, record a py-spy flame graph of the sozu worker (small keep-alive)
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
SMALL_BODY = b"hello world!\n"  # 13 bytes
BIG_SIZE = 1 << 20

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SECONDS = int(os.environ.get("BENCH_SECONDS", "2" if QUICK else "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if QUICK else "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
PROXIES = os.environ.get("BENCH_PROXIES", "nginx,haproxy,sozu,bare").split(",")
CASES = os.environ.get("BENCH_CASES", "small,close,big,https").split(",")
PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")

CASE_TITLES = {
    "small": "small keep-alive (13-byte answers)",
    "close": "new connection per request (Connection: close)",
    "big": "1 MiB answers, keep-alive",
    "https": "HTTPS keep-alive (13-byte answers)",
}
PROXY_TITLES = {
    "nginx": "nginx (1 worker)",
    "haproxy": "HAProxy (nbthread 1)",
    "sozu": "sozu-py (1 worker)",
    "bare": "bare uvloop+httptools",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --- processes ---------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """pid and all its descendants, from /proc (ppid field of each /proc/N/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def cpu_ticks(pids: list[int], user_only: bool = False) -> dict[int, int]:
    """utime + stime (or utime alone) of each process, in clock ticks."""
    ticks = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[pid] = int(fields[11]) + (0 if user_only else int(fields[12]))
    return ticks


def machine_busy_ticks() -> int:
    """Busy (non-idle, non-iowait) clock ticks of the whole machine, all CPUs, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]) - fields[3] - fields[4]


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def wait_http(port: int, tls: bool, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    """Wait until something answers an HTTP request on port (any status), or fail."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1) as raw:
                sock = context.wrap_socket(raw, server_hostname="localhost") if tls else raw
                sock.sendall(request)
                if sock.recv(16).startswith(b"HTTP/1."):
                    return
        except (OSError, ssl.SSLError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"port {port} does not answer HTTP{'S' if tls else ''}: {last}")


@dataclass
class Server:
    name: str
    argv: list[str]
    directory: Path
    http_port: int
    https_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        out = open(self.directory / "output.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
        )
        out.close()
        try:
            wait_http(self.http_port, False, time.monotonic() + 20, self.proc)
        except RuntimeError as exc:
            tail = (self.directory / "output.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name}: {exc}\n{tail}") from None
        if self.https_port is not None:
            try:
                wait_http(self.https_port, True, time.monotonic() + 5, self.proc)
            except RuntimeError as exc:  # measured anyway: its https rows will show the errors
                log(f"{self.name}: {exc}")

    def pids(self) -> list[int]:
        assert self.proc is not None
        return descendants(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        tree = self.pids()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in tree[1:]:  # children that outlived their parent
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- configurations ------------------------------------------------------------------------------


def nginx_common(directory: Path) -> str:
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"    {kind}_temp_path {directory}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\ndaemon off;\npid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log warn;\nevents {{ worker_connections 4096; }}\n"
        f"http {{\n    access_log off;\n    keepalive_requests 1000000;\n"
        f"    keepalive_timeout 60s;\n{temp}"
    )


def backend_server(work: Path) -> Server:
    directory = work / "backend"
    directory.mkdir()
    (directory / "big").write_bytes(b"x" * BIG_SIZE)
    port = free_port()
    body = SMALL_BODY.decode().replace("\n", "\\n")
    conf = nginx_common(directory) + (
        f"    sendfile on;\n    server {{\n        listen {HOST}:{port} backlog=4096;\n"
        f'        location = / {{ default_type text/plain; return 200 "{body}"; }}\n'
        f"        location = /big {{ default_type application/octet-stream;\n"
        f"            alias {directory}/big; }}\n"
        "    }\n}\n"
    )
    (directory / "nginx.conf").write_text(conf)
    argv = ["nginx", "-p", str(directory), "-c", str(directory / "nginx.conf")]
    return Server("backend", argv, directory, port)


def nginx_proxy(work: Path, backend: int, cert: Path, key: Path) -> Server:
    directory = work / "nginx"
    directory.mkdir()
    port, tls_port = free_port(), free_port()
    conf = nginx_common(directory) + (
        f"    upstream backend {{ server {HOST}:{backend}; keepalive 64; }}\n"
        f"    server {{\n        listen {HOST}:{port} backlog=4096;\n"
        f"        listen {HOST}:{tls_port} ssl backlog=4096;\n"
        f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
        "        location / {\n            proxy_pass http://backend;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_max_temp_file_size 0;\n"
        "            proxy_buffers 16 16k;\n"
        "            proxy_buffer_size 16k;\n"
        "        }\n    }\n}\n"
    )
    (directory / "nginx.conf").write_text(conf)
    argv = ["nginx", "-p", str(directory), "-c", str(directory / "nginx.conf")]
    return Server("nginx", argv, directory, port, tls_port)


def haproxy_proxy(work: Path, backend: int, cert: Path, key: Path) -> Server:
    directory = work / "haproxy"
    directory.mkdir()
    port, tls_port = free_port(), free_port()
    pem = directory / "cert+key.pem"
    pem.write_text(cert.read_text() + key.read_text())
    conf = f"""global
    nbthread 1
    maxconn 4096
    pidfile {directory}/haproxy.pid

defaults
    mode http
    option http-keep-alive
    timeout connect 3s
    timeout client 60s
    timeout server 30s
    timeout http-keep-alive 60s

frontend bench
    bind {HOST}:{port}
    bind {HOST}:{tls_port} ssl crt {pem}
    default_backend backend

backend backend
    http-reuse always
    server b1 {HOST}:{backend}
"""
    (directory / "haproxy.cfg").write_text(conf)
    argv = ["haproxy", "-db", "-f", str(directory / "haproxy.cfg")]
    return Server("haproxy", argv, directory, port, tls_port)


def sozu_proxy(work: Path, backend: int, cert: Path, key: Path) -> Server:
    directory = work / "sozu"
    directory.mkdir()
    port, tls_port = free_port(), free_port()
    conf = f"""worker_count = 1
command_socket = "sozu.sock"
log_level = "warn"
log_target = "file://{directory}/sozu.log"

[[listeners]]
protocol = "http"
address = "{HOST}:{port}"

[[listeners]]
protocol = "https"
address = "{HOST}:{tls_port}"
certificate = "{cert}"
key = "{key}"

[clusters.bench]
protocol = "http"
load_balancing = "ROUND_ROBIN"
frontends = [
    {{ address = "{HOST}:{port}", hostname = "localhost" }},
    {{ address = "{HOST}:{tls_port}", hostname = "localhost" }},
]
backends = [{{ address = "{HOST}:{backend}", backend_id = "nginx" }}]
"""
    (directory / "config.toml").write_text(conf)
    argv = [PYTHON, "-m", "sozu", "-c", str(directory / "config.toml"), "start"]
    return Server("sozu", argv, directory, port, tls_port, env={"PYTHONPATH": str(ROOT)})


def bare_proxy(work: Path, backend: int, cert: Path, key: Path) -> Server:
    directory = work / "bare"
    directory.mkdir()
    port, tls_port = free_port(), free_port()
    argv = [
        PYTHON,
        str(HERE / "bare_proxy.py"),
        str(port),
        str(backend),
        str(tls_port),
        str(cert),
        str(key),
    ]
    return Server("bare", argv, directory, port, tls_port)


def make_certificate(work: Path) -> tuple[Path, Path]:
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


# --- wrk -----------------------------------------------------------------------------------------

UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0, "m": 60_000_000.0}


def parse_latency(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * UNITS[match.group(2)] if match else float("nan")


@dataclass
class Run:
    requests: int = 0
    rps: float = 0.0
    p50_us: float = float("nan")
    p99_us: float = float("nan")
    errors: int = 0  # non-2xx/3xx answers + socket errors
    non2xx: int = 0
    socket_errors: int = 0
    others_pct: float = float("nan")  # CPU used by other processes during the run, % of one CPU
    cpu_us_per_req: float = float("nan")
    user_us_per_req: float = float("nan")  # the user-space part (the kernel's is the rest)
    rss_mib: float = float("nan")
    note: str = ""


def parse_wrk(out: str) -> Run:
    run = Run()
    if m := re.search(r"(\d+) requests in", out):
        run.requests = int(m.group(1))
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        run.rps = float(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", out, re.M):
        run.p50_us = parse_latency(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        run.p99_us = parse_latency(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        run.non2xx = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        run.socket_errors = sum(int(g) for g in m.groups())
    run.errors = run.non2xx + run.socket_errors
    if not run.requests:
        run.p50_us = run.p99_us = float("nan")
    return run


def wrk(case: str, port: int, seconds: int) -> list[str]:
    scheme = "https" if case == "https" else "http"
    argv = [
        "wrk",
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "-H",
        "Host: localhost",
    ]
    if case == "close":
        argv += ["-H", "Connection: close"]
    path = "/big" if case == "big" else "/"
    return [*argv, f"{scheme}://{HOST}:{port}{path}"]


def measure(server: Server, case: str, seconds: int, backend: Server) -> Run:
    port = server.https_port if case == "https" else server.http_port
    assert port is not None
    pids = server.pids()
    known = pids + backend.pids()
    user_before = cpu_ticks(pids, user_only=True)
    before, busy_before, wrk_before = (
        cpu_ticks(known),
        machine_busy_ticks(),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    start = time.monotonic()
    done = subprocess.run(
        wrk(case, port, seconds), capture_output=True, text=True, timeout=seconds + 60
    )
    user_after = cpu_ticks(pids, user_only=True)
    after, busy_after, wrk_after = (
        cpu_ticks(known),
        machine_busy_ticks(),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    elapsed = time.monotonic() - start
    run = parse_wrk(done.stdout)
    ours = sum(after.get(p, 0) - before.get(p, 0) for p in known if p in before) / CLK_TCK
    ours += wrk_after.ru_utime + wrk_after.ru_stime - wrk_before.ru_utime - wrk_before.ru_stime
    run.others_pct = max(0.0, (busy_after - busy_before) / CLK_TCK - ours) * 100 / elapsed
    if done.returncode != 0:
        run.note = "wrk failed: " + " ".join((done.stderr or done.stdout).strip().splitlines()[-1:])
    elif not run.requests:
        run.note = "no answers"
    used = sum(after.get(p, 0) - before.get(p, 0) for p in pids if p in before)
    if run.requests:
        run.cpu_us_per_req = used * 1_000_000 / CLK_TCK / run.requests
        user = sum(user_after.get(p, 0) - user_before.get(p, 0) for p in pids if p in user_before)
        run.user_us_per_req = user * 1_000_000 / CLK_TCK / run.requests
    run.rss_mib = rss_kib(pids) / 1024
    return run


# --- table ---------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def ms(us: float) -> str:
    return "-" if us != us else f"{us / 1000:.2f} ms"


def ratio(value: float, ref: float) -> str:
    if value != value or ref != ref or ref == 0:
        return "-"
    return f"{value / ref:.2f}x"


def summarize(results: dict[tuple[str, str], list[Run]]) -> dict[tuple[str, str], Run]:
    out = {}
    for key, runs in results.items():
        errors = sum(r.errors for r in runs)
        requests = sum(r.requests for r in runs)
        non2xx = sum(r.non2xx for r in runs)
        socket_errors = sum(r.socket_errors for r in runs)
        summary = Run(
            requests=requests,
            rps=median([r.rps for r in runs]),
            p50_us=median([r.p50_us for r in runs]),
            p99_us=median([r.p99_us for r in runs]),
            errors=errors,
            cpu_us_per_req=median([r.cpu_us_per_req for r in runs]),
            user_us_per_req=median([r.user_us_per_req for r in runs]),
            rss_mib=median([r.rss_mib for r in runs]),
            non2xx=non2xx,
            socket_errors=socket_errors,
            others_pct=max(
                [r.others_pct for r in runs if r.others_pct == r.others_pct], default=float("nan")
            ),
        )
        notes = {r.note for r in runs if r.note}
        if requests == 0:
            notes.add("no answers")
        elif non2xx:
            notes.add(f"ERRORS: {100 * non2xx / requests:.0f}% non-2xx")
        if socket_errors:
            notes.add(f"{socket_errors} socket errors")
        summary.note = ", ".join(sorted(notes))
        out[key] = summary
    return out


def table(summary: dict[tuple[str, str], Run]) -> str:
    head = (
        "| proxy | req/s | vs nginx | p50 | p99 | p99 vs nginx "
        "| CPU us/req | of which user | CPU vs nginx | RSS MiB | errors |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    parts = []
    for case in CASES:
        ref = summary.get(("nginx", case), Run())
        rows = []
        others = 0.0
        for proxy in PROXIES:
            r = summary.get((proxy, case))
            if r is None:
                continue
            err = f"{r.errors} ({r.note})" if r.note else str(r.errors)
            others = max(others, r.others_pct) if r.others_pct == r.others_pct else others
            rows.append(
                f"| {PROXY_TITLES[proxy]} | {fmt(r.rps)} | {ratio(r.rps, ref.rps)} "
                f"| {ms(r.p50_us)} | {ms(r.p99_us)} | {ratio(r.p99_us, ref.p99_us)} "
                f"| {fmt(r.cpu_us_per_req, 1)} | {fmt(r.user_us_per_req, 1)} "
                f"| {ratio(r.cpu_us_per_req, ref.cpu_us_per_req)} "
                f"| {fmt(r.rss_mib, 1)} | {err} |"
            )
        busy = f"\nOther processes on the machine used up to {others:.0f}% of one CPU meanwhile.\n"
        parts.append(f"### {CASE_TITLES[case]}\n\n" + head + "\n".join(rows) + "\n" + busy)
    return "\n".join(parts)


def targets(summary: dict[tuple[str, str], Run]) -> str:
    sozu, nginx, bare = (summary.get((p, "small")) for p in ("sozu", "nginx", "bare"))
    if sozu is None or nginx is None:
        return ""
    checks = [
        ("req/s >= 0.75x nginx", sozu.rps >= 0.75 * nginx.rps, ratio(sozu.rps, nginx.rps)),
        ("CPU/req <= 1.5x nginx", sozu.cpu_us_per_req <= 1.5 * nginx.cpu_us_per_req,
         ratio(sozu.cpu_us_per_req, nginx.cpu_us_per_req)),
        ("p99 <= 2x nginx", sozu.p99_us <= 2 * nginx.p99_us, ratio(sozu.p99_us, nginx.p99_us)),
    ]  # fmt: skip
    if bare is not None:
        checks.append(
            ("req/s >= 0.9x bare prototype", sozu.rps >= 0.9 * bare.rps, ratio(sozu.rps, bare.rps))
        )
        checks.append(
            ("CPU/req <= 1.1x bare prototype", sozu.cpu_us_per_req <= 1.1 * bare.cpu_us_per_req,
             ratio(sozu.cpu_us_per_req, bare.cpu_us_per_req))
        )  # fmt: skip
    errors = " (sozu-py answered with errors: not a valid measurement)" if sozu.errors else ""
    lines = [f"Targets, small keep-alive, sozu-py{errors}:", ""]
    lines += [
        f"- {name}: {value} {'ok' if good and not sozu.errors else 'MISSED'}"
        for name, good, value in checks
    ]
    return "\n".join(lines) + "\n"


def versions() -> str:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError:
            return "?"
        text = (done.stdout + done.stderr).strip().splitlines()
        return text[0] if text else "?"

    return "; ".join(
        [
            first_line(["nginx", "-v"]),
            first_line(["haproxy", "-v"]),
            first_line(["wrk", "-v"]),
            "Python " + sys.version.split()[0],
        ]
    )


def profile(server: Server, backend: Server) -> None:
    spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(spy).exists():
        log("py-spy not found: .venv/bin/pip install py-spy")
        return
    worker = server.pids()[1:]
    if not worker:
        log("no sozu worker process to profile")
        return
    raw = os.environ.get("BENCH_PROFILE") == "raw"
    out = HERE / "results" / ("profile-sozu-small.txt" if raw else "profile-sozu-small.svg")
    seconds = max(SECONDS, 5)
    log(f"profiling sozu worker {worker[-1]} for {seconds}s -> {out}")
    spy_proc = subprocess.Popen(
        [
            spy,
            "record",
            "-d",
            str(seconds),
            "-o",
            str(out),
            *(["-f", "raw"] if raw else []),
            "--pid",
            str(worker[-1]),
        ],
        stdout=sys.stderr,
    )
    measure(server, "small", seconds, backend)
    spy_proc.wait(timeout=seconds + 60)


def main() -> int:
    for tool in ("nginx", "haproxy", "wrk", "openssl"):
        if shutil.which(tool) is None:
            log(f"{tool} not found (bench/run installs it)")
            return 1
    factories = {
        "nginx": nginx_proxy,
        "haproxy": haproxy_proxy,
        "sozu": sozu_proxy,
        "bare": bare_proxy,
    }
    started: list[Server] = []
    results: dict[tuple[str, str], list[Run]] = {}
    total = len(PROXIES) * len(CASES) * ROUNDS * SECONDS
    log(
        f"bench: {ROUNDS} round(s) x {len(CASES)} case(s) x {len(PROXIES)} prox(ies) "
        f"x {SECONDS}s ~ {total}s"
    )
    with tempfile.TemporaryDirectory(prefix="sozu-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        try:
            cert, key = make_certificate(work)
            backend = backend_server(work)
            backend.start()
            started.append(backend)
            servers = {}
            for name in PROXIES:
                server = factories[name](work, backend.http_port, cert, key)
                try:
                    server.start()
                except RuntimeError as exc:
                    log(f"{name} did not start: {exc}")
                    server.stop()
                    results.update({(name, case): [Run(note="did not start")] for case in CASES})
                    continue
                started.append(server)
                servers[name] = server
                log(
                    f"{name} up: http {server.http_port}, https {server.https_port}, "
                    f"pids {server.pids()}"
                )
            for server in servers.values():  # warm-up: pools, caches
                measure(server, "small", 1, backend)
            for round_ in range(ROUNDS):
                for case in CASES:
                    order = list(servers.values())
                    shift = round_ % len(order) if order else 0
                    for server in order[shift:] + order[:shift]:  # rotate who goes first
                        run = measure(server, case, SECONDS, backend)
                        results.setdefault((server.name, case), []).append(run)
                        log(
                            f"round {round_ + 1} {case:5} {server.name:7} {run.rps:9.0f} req/s "
                            f"p99 {ms(run.p99_us)} cpu {fmt(run.cpu_us_per_req, 1)} us/req "
                            f"errors {run.errors} {run.note} (others {run.others_pct:.0f}% CPU)"
                        )
            if PROFILE and "sozu" in servers:
                profile(servers["sozu"], backend)
        finally:
            for server in reversed(started):
                server.stop()
    summary = summarize(results)
    text = (
        f"wrk {THREADS} thread, {CONNECTIONS} connections, {SECONDS} s per run, "
        f"median of {ROUNDS} round(s), rounds interleaved; {os.cpu_count()} CPUs.\n"
        f"{versions()}\n\n" + table(summary) + "\n" + targets(summary)
    )
    print(text)
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (results_dir / "latest.md").write_text(f"# bench/run, {stamp}\n\n{text}")
    log(f"written to {results_dir / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
