"""One self-contained checkpoint file: networks, optimizers, schedulers, step, RNG states, config.

Files are written atomically (temporary file in the same folder, fsync, rename), so a
crash while saving leaves the previous checkpoint intact. Loading uses
``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary
objects, so a malicious file cannot run code. Every command reads networks through
:func:`load_generator` / :func:`restore_weights`, so a checkpoint whose weights do not fit
its stored configuration gets one short message naming the file, wherever it is read.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unit_core.config import UnitConfig, config_from_dict
from unit_core.networks import UNITGenerator, upgrade_legacy_state
from unit_core.scratch import current_umask, scratch_file

FORMAT = "unit-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "config", "step", "networks")
ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, foreign or unsafe, or cannot be written; the message names the file."""


def atomic_torch_save(payload: Any, path: str | Path) -> Path:
    """``torch.save`` into a temporary sibling, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = scratch_file(path.parent, f".{path.name}")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(temp_name, path)
    except (OSError, RuntimeError) as exc:  # a full disk, a quota, a file-size limit: earlier checkpoints stay as they were
        Path(temp_name).unlink(missing_ok=True)
        # torch.save reports a failed write as a RuntimeError of its zip writer, the OSError as its context.
        cause = exc if isinstance(exc, OSError) else exc.__context__
        if not isinstance(cause, OSError):
            raise
        raise CheckpointError(f"{path}: cannot write the checkpoint: {cause.strerror or cause}; the previous "
                              f"checkpoints are intact, resume once there is room") from None
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def link_or_copy_atomic(source: Path, target: Path) -> None:
    """Make ``target`` point at ``source``'s bytes (hard link when possible), atomically."""
    descriptor, temp = scratch_file(target.parent, f".{target.name}")
    os.close(descriptor)
    temp.unlink()  # os.link needs a free name
    try:
        os.link(source, temp)
    except OSError:
        temp.write_bytes(source.read_bytes())
    os.replace(temp, target)


def make_checkpoint(config: dict[str, Any], step: int, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "step": int(step),
        **state,
    }


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; every failure is a :class:`CheckpointError` naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    with path.open("rb") as handle:
        magic = handle.read(len(ZIP_MAGIC))
    if magic != ZIP_MAGIC:
        # torch.save always writes a zip archive; anything else (a raw pickle, random bytes)
        # is not ours, and torch's legacy-format reader fails on it in unpredictable ways.
        raise CheckpointError(f"{path}: not a checkpoint: not a PyTorch zip archive (starts with {magic!r})")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: refused to load: not a checkpoint of tensors and plain values "
            f"(loading other objects would mean unpickling them, which can run arbitrary code)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - corrupt bytes inside the archive can raise any parser error
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint: {first_line}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a UNIT checkpoint (no '{FORMAT}' format marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is not a whole number")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this program supports ({FORMAT_VERSION})"
        )
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return payload


def stored_config(payload: dict[str, Any], path: str | Path) -> UnitConfig:
    """The validated configuration a checkpoint was trained with."""
    try:
        return config_from_dict(payload["config"], source=f"{path} (stored configuration)")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def restore_weights(module: nn.Module, payload: dict[str, Any], name: str, path: str | Path) -> None:
    """Load ``payload['networks'][name]`` into ``module``; a missing or mismatched state is a CheckpointError.

    Two-domain weights saved before N-domain models are renamed to today's module paths.
    """
    networks = payload.get("networks")
    if not isinstance(networks, dict) or not isinstance(networks.get(name), dict):
        held = ", ".join(sorted(networks)) if isinstance(networks, dict) else "nothing"
        raise CheckpointError(f"{path}: checkpoint holds no '{name}' weights (networks: {held or 'none'})")
    state, expected = upgrade_legacy_state(networks[name]), module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [f"{key}: stored {tuple(state[key].shape)}, model {tuple(expected[key].shape)}"
                  for key in expected if key in state and getattr(state[key], "shape", None) != expected[key].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
    if mismatched:
        problems.append(f"{len(mismatched)} of another shape (first: {mismatched[0]})")
    if problems:
        raise CheckpointError(f"{path}: the '{name}' weights do not fit the checkpoint's stored model configuration: "
                              + "; ".join(problems))
    module.load_state_dict(state)


def averaged(name: str) -> str:
    """The checkpoint key of the moving average of network ``name`` (gen, dis), kept with ``train.ema_decay``."""
    return f"{name}_ema"


def inference_weights(payload: dict[str, Any], name: str) -> str:
    """Which of a checkpoint's weights of ``name`` (gen, dis) inference uses: the moving average
    (:func:`averaged`) where the checkpoint holds one, else the trained weights."""
    networks = payload.get("networks")
    return averaged(name) if isinstance(networks, dict) and averaged(name) in networks else name


def load_generator(path: str | Path) -> tuple[UnitConfig, UNITGenerator]:
    """The stored configuration and the generator (an E_d and G_d per domain) of a checkpoint, on the CPU, in eval mode
    (the averaged weights where the checkpoint has them: :func:`inference_weights`)."""
    payload = load_checkpoint(path, map_location="cpu")
    cfg = stored_config(payload, path)
    return cfg, inference_generator(payload, cfg, path)


def inference_generator(payload: dict[str, Any], cfg: UnitConfig, path: str | Path) -> UNITGenerator:
    """The generator of a loaded checkpoint, in eval mode, with the weights inference uses (:func:`inference_weights`)."""
    generator = UNITGenerator(cfg.model, cfg.channels())
    restore_weights(generator, payload, inference_weights(payload, "gen"), path)
    return generator.eval()
