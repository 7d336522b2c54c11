"""The DDP process group of a run on a local Ray instance, with its rendezvous store on loopback.

Ray Train's own set-up has rank 0 start PyTorch's rendezvous store (a ``TCPStore``, which
has no authentication) through ``init_process_group``, and PyTorch's store listens on every
interface whatever address it is given. Here rank 0's process starts the store itself on a
socket bound to the loopback address, and every rank, rank 0 included, joins it as a client
(PyTorch's "agent store" mode, the one torchelastic uses for a store started outside the
process group). The rest is Ray Train's set-up unchanged.

Only for a Ray instance on this machine: on a cluster the store must be reachable from the
other nodes, and Ray Train's own set-up is used.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import ray
import torch.distributed as dist
from ray.train._internal.base_worker_group import BaseWorkerGroup
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _setup_torch_process_group, _TorchBackend

LOOPBACK = "127.0.0.1"

# The store rank 0's process serves; it must outlive every use of the process group.
_loopback_store: dist.TCPStore | None = None


class LoopbackTorchConfig(TorchConfig):
    """``TorchConfig`` whose rendezvous store listens on the loopback address only (``backend`` must be set)."""

    @property
    def backend_cls(self):
        return _LoopbackTorchBackend


class _LoopbackTorchBackend(_TorchBackend):
    def on_start(self, worker_group: BaseWorkerGroup, backend_config: LoopbackTorchConfig) -> None:
        world_size = len(worker_group)
        port = worker_group.execute_single(0, _serve_store_on_loopback, world_size=world_size,
                                           timeout_s=backend_config.timeout_s)
        worker_group.execute(_join_store_on_loopback, port=port)
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get([
            worker_group.execute_single_async(rank, _setup_torch_process_group, backend=backend_config.backend,
                                              world_rank=rank, world_size=world_size, init_method="env://",
                                              timeout_s=backend_config.timeout_s)
            for rank in range(world_size)
        ])


def _serve_store_on_loopback(world_size: int, timeout_s: int) -> int:
    """Start the rendezvous store in this worker on a free loopback port; return the port."""
    global _loopback_store
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOPBACK, 0))
    listener.listen()
    port = listener.getsockname()[1]
    # The store takes the socket over (and closes it with itself).
    _loopback_store = dist.TCPStore(LOOPBACK, port, world_size, is_master=True, master_listen_fd=listener.detach(),
                                    wait_for_workers=False, timeout=timedelta(seconds=timeout_s))
    return port


def _join_store_on_loopback(port: int) -> None:
    os.environ["MASTER_ADDR"] = LOOPBACK
    os.environ["MASTER_PORT"] = str(port)
    # Every rank a client of the store above, none starting one of its own.
    os.environ["TORCHELASTIC_USE_AGENT_STORE"] = "True"
