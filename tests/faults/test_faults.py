"""Fault injection: kill -9 and SIGINT of real `unit` processes, then resume or re-run, then compare.

After each fault the final state must equal an uninterrupted run's: same step count, a
loadable latest checkpoint with bit-identical weights (deterministic training), byte-identical
ingest output, no scratch debris, no stray process. The suite prints one summary line
(faults injected, runs recovered, files lost) for docs/reliability.md.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from conftest import REPO
from unit_core.checkpoint import load_checkpoint
from unit_core.scratch import TAG

pytestmark = pytest.mark.slow

TINY = [
    "data.domain_a=gta", "data.domain_b=city", "data.image_size=32", "data.load_size=40", "model.width=8",
    "model.dis_width=8", "model.dis_layers=3", "model.res_blocks=2", "train.log_every=2", "train.checkpoint_every=3",
    "train.sample_count=2", "train.device=cpu", "train.deterministic=true", "train.threads=1",
]
STEPS = 24
TALLY = {"faults": 0, "recovered": 0, "lost": 0}  # lost: runs or files that differ from an uninterrupted one


def unit_process(*args: str) -> subprocess.Popen:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "unit_cli", *args], cwd=REPO, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def train_args(root: Path, out: Path, resume: bool) -> list[str]:
    sets = [part for value in [f"data.root={root}", f"train.out_dir={out}", f"train.max_steps={STEPS}", *TINY]
            for part in ("--set", value)]
    return ["train", "--no-progress", *(["--resume"] if resume else []), *sets]


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def debris(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if TAG in path.name]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    networks = load_checkpoint(checkpoint)["networks"]
    return {f"{net}.{key}": value for net, state in networks.items() for key, value in state.items()}


@pytest.fixture(scope="module")
def uninterrupted(street_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "straight"
    result = finish(unit_process(*train_args(street_root, out, resume=False)))
    assert result.returncode == 0, result.stderr
    return out / "checkpoints" / "latest.pt"


def interrupt_and_recover(root: Path, out: Path, delay: float, sig: int, reference: Path) -> None:
    process = unit_process(*train_args(root, out, resume=False))
    time.sleep(delay)
    injected = process.poll() is None  # else the run had finished: nothing to recover from
    if injected:
        os.kill(process.pid, sig)
        TALLY["faults"] += 1
    process.communicate(timeout=120)
    resume = (out / "checkpoints" / "latest.pt").exists()
    result = finish(unit_process(*train_args(root, out, resume=resume)))
    assert result.returncode == 0, result.stderr
    latest = out / "checkpoints" / "latest.pt"
    assert load_checkpoint(latest)["step"] == STEPS
    expected, got = weights(reference), weights(latest)
    different = [key for key in expected if not torch.equal(expected[key], got[key])]
    TALLY["lost"] += bool(different)
    assert not different, f"after a fault at {delay:.2f} s: {different[:3]}"
    assert not debris(out), debris(out)
    TALLY["recovered"] += injected


def test_kill_9_of_training_at_random_moments_resumes_to_the_same_weights(uninterrupted, street_root, tmp_path):
    # Moments spread over start-up, training and checkpoint writes (a tiny run takes a few seconds).
    moments = sorted(random.Random(20261201).uniform(2.0, 9.0) for _ in range(20))
    for index, delay in enumerate(moments):
        interrupt_and_recover(street_root, tmp_path / f"kill{index}", delay, signal.SIGKILL, uninterrupted)


def test_sigint_of_training_resumes_to_the_same_weights(uninterrupted, street_root, tmp_path):
    for index, delay in enumerate((2.5, 3.5, 4.5, 5.5, 7.0)):
        interrupt_and_recover(street_root, tmp_path / f"int{index}", delay, signal.SIGINT, uninterrupted)


def test_a_full_disk_stops_training_cleanly_and_resume_completes(uninterrupted, street_root, tmp_path):
    """A file-size limit (RLIMIT_FSIZE, what a full disk looks like to the writer) below a checkpoint's size."""
    limit = uninterrupted.stat().st_size // 2

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "full"
    process = subprocess.Popen([sys.executable, "-m", "unit_cli", *train_args(street_root, out, resume=False)], cwd=REPO,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=small_files,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = process.communicate(timeout=600)
    TALLY["faults"] += 1
    assert process.returncode == 2 and "cannot write the checkpoint" in err and "Traceback" not in err, err
    assert not debris(out), debris(out)
    resume = (out / "checkpoints" / "latest.pt").exists()
    result = finish(unit_process(*train_args(street_root, out, resume=resume)))
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["step"] == STEPS and not debris(out)
    TALLY["recovered"] += 1


def test_stale_scratch_of_dead_processes_is_removed_and_live_ones_kept(street_root, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = out / "checkpoints" / f".step_00000003.pt{TAG}{dead.pid}-abc.tmp"
        live = out / "checkpoints" / f".step_00000003.pt{TAG}{alive.pid}-def.tmp"
        stale.write_bytes(b"half a checkpoint")
        live.write_bytes(b"another run's checkpoint being written")
        result = finish(unit_process(*train_args(street_root, out, resume=False)))
        assert result.returncode == 0, result.stderr
        assert not stale.exists() and live.exists()
        TALLY["faults"] += 1
        TALLY["recovered"] += 1
    finally:
        alive.kill()
        alive.wait()


def test_kill_9_of_a_parallel_ingest_leaves_no_process_and_the_rerun_is_identical(shared_data, tmp_path):
    digits = shared_data / "digits"
    args = ["ingest", "digits", "--mnist", str(digits / "mnist"), "--usps", str(digits / "usps" / "usps.h5"),
            "--size", "32", "--limit", "6000", "--workers", "2", "--no-progress"]
    reference = tmp_path / "reference"
    assert finish(unit_process(*args, "--out", str(reference))).returncode == 0
    out = tmp_path / "killed"
    process = unit_process(*args, "--out", str(out))
    parent = psutil.Process(process.pid)
    deadline = time.monotonic() + 120
    while len(parent.children(recursive=True)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = parent.children(recursive=True)
    assert len(workers) >= 2, "the ingest never started its worker pool"
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    TALLY["faults"] += 1
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"pool workers outlived the killed ingest: {[p.pid for p in alive]}"
    rerun = finish(unit_process(*args, "--out", str(out)))
    assert rerun.returncode == 0, rerun.stderr
    assert not debris(tmp_path), debris(tmp_path)
    files = sorted(path.relative_to(reference) for path in reference.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file())
    changed = [name for name in files if name.name != "report.json"
               and (reference / name).read_bytes() != (out / name).read_bytes()]
    TALLY["lost"] += len(changed)
    assert not changed, changed[:5]
    TALLY["recovered"] += 1


def test_summary_line():
    """Runs last in this module: the line docs/reliability.md quotes."""
    print(f"\nfault injection: {TALLY['faults']} faults injected, {TALLY['recovered']} runs recovered, "
          f"{TALLY['lost']} files lost")
    assert TALLY["faults"] > 0 and TALLY["recovered"] == TALLY["faults"] and TALLY["lost"] == 0
