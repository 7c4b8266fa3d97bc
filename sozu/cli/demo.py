"""`sozu demo`: sozu-py on its embedded demo configuration, for a newcomer's first minute.

It copies the packaged demo config into a private run folder (so the command socket is writable
whatever the install), starts the demo backend and `sozu start` on that config, sends one request
through the proxy and prints the answer, then prints the commands to try while it runs. Ctrl-C
stops everything; `--once` stops right after the first answer (scripts and tests use it).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sozu.command.addresses import parse_address
from sozu.command.certificate import self_signed
from sozu.command.config import Config, HttpFrontendConfig, ListenerProtocol, load_config
from sozu.command.config import demo_config_path as packaged_demo_config
from sozu.command.errors import SozuError
from sozu.demo.backend import run_forever

STARTUP_SECONDS = 30.0


def run_folder() -> Path:
    """A folder only this user writes to, stable across runs so the printed commands stay valid."""
    folder = Path(tempfile.gettempdir()) / f"sozu-demo-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def demo_config(args: argparse.Namespace) -> Path:
    """The config to run: `-c FILE` when given, else a fresh copy of the packaged demo."""
    if args.config:
        return Path(args.config).resolve()
    target = run_folder() / "demo.toml"
    shutil.copyfile(packaged_demo_config(), target)
    return target


def first_http_frontend(config: Config) -> HttpFrontendConfig:
    for cluster in config.clusters:
        for frontend in cluster.frontends:
            if isinstance(frontend, HttpFrontendConfig):
                return frontend
    raise SozuError(f"{config.config_path}: the demo needs an http frontend")


def start_backend(config: Config) -> None:
    """Serve the demo backend in a daemon thread on the first backend address of the config."""
    ip, port = parse_address(config.clusters[0].backends[0].address)
    threading.Thread(
        target=run_forever, args=(str(ip), port), daemon=True, name="demo-backend"
    ).start()


def wait_ready(command: list[str], process: subprocess.Popen[bytes]) -> None:
    """Poll `sozu status` until the supervisor answers, or fail if it died."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SozuError(f"sozu exited with code {process.returncode} during start-up")
        status = subprocess.run([*command, "status"], capture_output=True, timeout=10)
        if status.returncode == 0:
            return
        time.sleep(0.2)
    raise SozuError(f"sozu did not answer within {STARTUP_SECONDS:.0f} s")


def add_https_frontend(
    command: list[str], config: Config, frontend: HttpFrontendConfig
) -> HttpFrontendConfig | None:
    """Give the first HTTPS listener a fresh self-signed certificate and an HTTPS frontend.

    Done live with the CLI, as an operator would: `certificate add`, then `frontend https add`.
    """
    https = config.listeners_of(ListenerProtocol.HTTPS)
    if not https:
        return None
    address = https[0].address
    certificate, key = self_signed(frontend.hostname)
    folder = config.config_path.parent
    certificate_path = folder / "demo-cert.pem"
    certificate_path.write_text(certificate)
    chain_path = folder / "demo-chain.pem"
    chain_path.write_text("")  # self-signed: no intermediate certificates
    key_path = folder / "demo-key.pem"
    key_path.touch(mode=0o600)
    key_path.write_text(key)
    steps = [
        ["certificate", "add", "-a", address, "--certificate", str(certificate_path),
         "--certificate-chain", str(chain_path), "--key", str(key_path)],
        ["frontend", "https", "add", "-a", address, "--hostname", frontend.hostname,
         "id", config.clusters[0].cluster_id],
    ]  # fmt: skip
    for words in steps:
        result = subprocess.run([*command, *words], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise SozuError(f"demo set-up `sozu {' '.join(words)}` failed: {result.stderr.strip()}")
    return HttpFrontendConfig(address=address, hostname=frontend.hostname)


def fetch(frontend: HttpFrontendConfig, tls: bool = False) -> str:
    """One request through the proxy, as the printed curl line sends it (`-k` for TLS)."""
    ip, port = parse_address(frontend.address)
    connection: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the demo certificate is self-signed
        connection = http.client.HTTPSConnection(str(ip), port, timeout=10, context=context)
    else:
        connection = http.client.HTTPConnection(str(ip), port, timeout=10)
    try:
        connection.request("GET", "/", headers={"Host": frontend.hostname})
        answer = connection.getresponse()
        body = answer.read().decode(errors="replace")
        return f"HTTP/1.1 {answer.status} {answer.reason}\n{body}"
    finally:
        connection.close()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the demo like Ctrl-C does, so the supervisor is always shut down."""
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Start the demo, show a proxied answer and how to talk to the proxy; stop on Ctrl-C."""
    path = demo_config(args)
    config = load_config(path)
    frontend = first_http_frontend(config)
    start_backend(config)
    command = [sys.executable, "-m", "sozu", "-c", str(path)]
    log_path = path.parent / "sozu.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([*command, "start"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(command, process)
        curl = f"curl -H 'Host: {frontend.hostname}' http://{frontend.address}/"
        print(f"sozu-py is running on {path} (supervisor pid {process.pid}, log {log_path})")
        print(f"\n$ {curl}\n{fetch(frontend)}")
        secure = add_https_frontend(command, config, frontend)
        curls = [curl]
        if secure is not None:
            _, _, port = secure.address.rpartition(":")
            curl_tls = (
                f"curl -k --resolve {secure.hostname}:{port}:127.0.0.1 "
                f"https://{secure.hostname}:{port}/"
            )
            print(f"$ {curl_tls}\n{fetch(secure, tls=True)}")
            curls.append(curl_tls)
        print("While it runs, try:")
        for line in curls:
            print(f"  {line}")
        print(f"  sozu -c {path} status")
        print(f"  sozu -c {path} cluster list")
        print(f"  sozu -c {path} events")
        if args.once:
            return 0
        print("Ctrl-C stops the demo.")
        signal.signal(signal.SIGTERM, _interrupt)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
