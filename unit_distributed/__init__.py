"""UNIT training on Ray Train: DDP over workers and nodes, checkpoints in storage, automatic restarts.

The training loop is :func:`unit_core.training.fit`; this package only runs it once per
Ray Train worker (``ray.train.torch.TorchTrainer``) and connects it to Ray: the
process group and DDP wrapping, ``ray.train.report`` of metrics and checkpoints, and
``ray.train.get_checkpoint`` after a restart. ``unit_core`` never imports Ray.

    from unit_distributed import train
    result = train(cfg)            # cfg.distributed.workers == 1: plain fit(), no Ray

Set-up and cluster use: infra/cluster/README.md.
"""

from unit_distributed.runner import DistributedError, DistributedResult, train, train_distributed

__all__ = ["DistributedError", "DistributedResult", "train", "train_distributed"]
