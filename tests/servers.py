"""Starting real servers in tests: free ports, waiting for an answer, stopping process groups, a Prefect server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PREFECT_START_S = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[:4]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """End the process group this test started (the server and its workers)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


@contextmanager
def prefect_server(folder: Path, env: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """``prefect server start`` with its home, database and log under ``folder``; yields the environment using it.

    Flows run without ``PREFECT_API_URL`` start Prefect's temporary server instead, whose sqlite
    database its own startup writes can lock ("database is locked" on the telemetry row).
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server_env = {
        **(os.environ if env is None else env), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_HOME": str(folder / "home"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    log = folder / "server.log"
    with log.open("w") as output:
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  env=server_env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/api/health", server, log, PREFECT_START_S)
            yield server_env
        finally:
            stop(server)
