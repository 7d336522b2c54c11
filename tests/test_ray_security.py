"""The Ray instance `unit train --workers N` starts on this machine: loopback only, token authentication on.

Every TCP socket the instance's processes listen on (this process, the GCS, raylet, agents
and workers, found as this process's descendants) must be bound to a loopback address,
and the GCS must refuse a client that does not bring the instance's token.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import threading
import time

import psutil
import pytest

from conftest import tiny_config
from unit_core.config import DistributedConfig
from unit_distributed import DistributedError, train_distributed
from unit_distributed.runner import local_ray_instance

# Importing ray.train warns about Ray Data's own deprecated settings.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

Listener = tuple[str, int, str]  # address, port, process name


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    # A dual-stack socket bound to 127.0.0.1 reports it as ::ffff:127.0.0.1.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def listening_sockets() -> set[Listener]:
    """TCP sockets listening in this process and all its descendants."""
    me = psutil.Process()
    found = set()
    for process in [me, *me.children(recursive=True)]:
        try:
            name = process.name()
            connections = process.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # ended between listing and reading
        found |= {(c.laddr.ip, c.laddr.port, name) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


def gcs_client_error(address: str, **environment: str) -> str:
    """Connect a GCS client from a process of its own; "" if it connected, else its last line of error."""
    probe = "import sys; from ray._raylet import GcsClient; GcsClient(address=sys.argv[1])"
    clean = {name: value for name, value in os.environ.items() if not name.startswith("RAY_AUTH")}
    finished = subprocess.run([sys.executable, "-c", probe, address], env={**clean, **environment},
                              capture_output=True, text=True, timeout=120, check=False)
    return "" if finished.returncode == 0 else finished.stderr.strip().splitlines()[-1]


@pytest.fixture
def no_ray_address(monkeypatch):
    """As a user without a cluster: no RAY_ADDRESS, no authentication settings of their own."""
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")


def test_a_local_instance_listens_on_loopback_only_and_wants_its_token(no_ray_address):
    import ray
    from ray._raylet import AuthenticationMode, get_authentication_mode

    before = listening_sockets()
    with local_ray_instance(DistributedConfig(object_store_memory_mb=128)):
        token = os.environ["RAY_AUTH_TOKEN"]

        @ray.remote
        def worker_auth_mode() -> str:
            return os.environ["RAY_AUTH_MODE"]

        assert ray.get(worker_auth_mode.remote()) == "token"  # a worker is up, its sockets open
        opened = listening_sockets() - before
        assert get_authentication_mode() == AuthenticationMode.TOKEN
        gcs = ray.get_runtime_context().gcs_address
        refused = "AuthenticationError: RPC error: InvalidAuthToken"
        assert refused in gcs_client_error(gcs)  # no token sent
        assert refused in gcs_client_error(gcs, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)
        assert gcs_client_error(gcs, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token) == ""

    names = {name for _, _, name in opened}
    assert {"gcs_server", "raylet"} <= names, opened
    exposed = sorted(entry for entry in opened if not is_loopback(entry[0]))
    assert not exposed, exposed
    # Nothing of the instance is left in this process's environment.
    assert "RAY_AUTH_TOKEN" not in os.environ and "RAY_AUTH_MODE" not in os.environ


def test_a_local_instance_refuses_to_start_without_authentication(no_ray_address, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    refused = pytest.raises(DistributedError, match="RAY_AUTH_MODE=disabled: a Ray instance started by unit train always")
    with refused, local_ray_instance(DistributedConfig()):
        pytest.fail("Ray started without authentication")


@pytest.mark.slow
def test_distributed_training_on_a_local_instance_listens_on_loopback_only(no_ray_address, street_root, tmp_path):
    # Also the DDP ranks' own sockets: PyTorch's rendezvous store and gloo's connections.
    cfg = tiny_config(street_root, tmp_path / "run", "distributed.workers=2", "distributed.object_store_memory_mb=128",
                      f"distributed.storage_path={tmp_path / 'storage'}", "train.max_steps=4",
                      "train.checkpoint_every=4", "train.log_every=2")
    before = listening_sockets()
    seen: set[Listener] = set()
    finished = threading.Event()

    def watch() -> None:
        while not finished.is_set():
            seen.update(listening_sockets())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = train_distributed(cfg, progress=False)
    finally:
        finished.set()
        watcher.join()
    assert result.step == 4
    opened = seen - before
    # Process names carry the method running (ray::RayTrainWorker.run_train_fn): one port, several names.
    rank_ports = {port for _, port, name in opened if name.startswith("ray::RayTrainWorker")}
    assert len(rank_ports) >= 2, opened
    exposed = sorted({(address, port) for address, port, _ in opened if not is_loopback(address)})
    assert not exposed, exposed
