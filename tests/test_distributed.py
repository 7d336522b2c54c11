"""Distributed training on Ray Train with real Ray, on CPU (gloo): DDP against one process, two
nodes, a killed worker, S3 storage; and the cluster files.

The Ray tests share one local two-node cluster (``ray.cluster_utils.Cluster``): a head
node with 2 CPUs and a second node with 1 CPU, each worker reserving 1 CPU.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from conftest import adaptation_config, tiny_config
from servers import free_port
from unit_core.checkpoint import load_checkpoint
from unit_core.config import ConfigError, load_config
from unit_core.data import StepSampler
from unit_core.training import fit
from unit_distributed import DistributedError, train_distributed
from unit_distributed.storage import run_storage

# Importing ray.train warns about Ray Data's own deprecated settings.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

REPO = Path(__file__).resolve().parents[1]
CLUSTER_FILES = REPO / "infra" / "cluster"
LOSS_PREFIXES = ("gen/", "dis/")

# Set before the cluster starts, so that every Ray process (and the CLI's) inherits them.
RAY_TEST_ENVIRONMENT = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",  # notice a killed worker quickly
    "AWS_ACCESS_KEY_ID": "testing",  # moto accepts any credentials
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def ray_cluster():
    import ray
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as environment:
        for name, value in RAY_TEST_ENVIRONMENT.items():
            environment.setenv(name, value)
        node = {"num_cpus": 1, "object_store_memory": 128 * 2**20}
        cluster = Cluster(initialize_head=True, connect=True,
                          head_node_args={**node, "num_cpus": 2, "include_dashboard": False})
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        yield cluster
        ray.shutdown()
        cluster.shutdown()


def distributed_config(root: Path, tmp_path: Path, name: str, *overrides: str):
    return tiny_config(root, tmp_path / name, "distributed.workers=2", f"distributed.storage_path={tmp_path / 'storage'}",
                       *overrides)


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def stored_checkpoints(run_folder: Path) -> list[str]:
    return sorted(path.name for path in run_folder.glob("step_*"))


# ------------------------------------------------------------------------------------ no Ray needed
def test_worker_shards_interleave_into_the_single_process_batches():
    # 2 workers x batch 1 read, at each step, the same global samples as 1 process x batch 2.
    steps, world = 5, 2
    per_rank = [list(StepSampler(0, steps, 1, rank, world)) for rank in range(world)]
    interleaved = [sample for step in range(steps) for sample in (per_rank[0][step], per_rank[1][step])]
    assert interleaved == list(StepSampler(0, steps, 2)) == list(range(10))
    resumed = [list(StepSampler(3, steps, 1, rank, world)) for rank in range(world)]
    assert resumed == [per_rank[0][3:], per_rank[1][3:]]


def test_cluster_files_parse_and_run_the_distributed_entry_point():
    manifests = list(yaml.safe_load_all((CLUSTER_FILES / "rayjob.yaml").read_text()))
    job = next(doc for doc in manifests if doc["kind"] == "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["entrypoint"].startswith("unit train ") and "--workers" in job["spec"]["entrypoint"]
    assert "--gpus" in job["spec"]["entrypoint"]
    cluster_spec = job["spec"]["rayClusterSpec"]
    gpu_groups = [group for group in cluster_spec["workerGroupSpecs"]
                  if group["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    assert gpu_groups, "no worker group asks for GPUs"

    launcher = yaml.safe_load((CLUSTER_FILES / "cluster-aws-gpu.yaml").read_text())
    gpu_types = [name for name, spec in launcher["available_node_types"].items() if spec["resources"].get("GPU")]
    assert gpu_types and launcher["head_node_type"] in launcher["available_node_types"]
    assert any("pip install" in command for command in launcher["setup_commands"])
    readme = (CLUSTER_FILES / "README.md").read_text()
    assert "RAY_ADDRESS" in readme and "unit train" in readme


def test_storage_settings_are_checked_before_ray_starts(street_root, tmp_path):
    with pytest.raises(ConfigError, match="storage_endpoint_url is set but storage_path"):
        load_config(None, ["distributed.storage_endpoint_url=http://127.0.0.1:9000"])
    s3 = run_storage(load_config(None, ["distributed.storage_path=s3://bucket/runs/", "train.out_dir=runs/My Run",
                                        "distributed.storage_endpoint_url=http://127.0.0.1:9000"]))
    assert (s3.root, s3.run_name, s3.run_path, s3.uri("bucket/x")) == ("bucket/runs", "My-Run", "bucket/runs/My-Run",
                                                                         "s3://bucket/x")
    assert s3.filesystem.type_name == "s3"

    cfg = distributed_config(street_root, tmp_path, "absent")
    with pytest.raises(DistributedError, match=re.escape(f"{tmp_path / 'storage' / 'absent'}: no run of that name")):
        train_distributed(cfg, resume=True)
    (tmp_path / "storage" / "taken").mkdir(parents=True)
    with pytest.raises(DistributedError, match="taken: already holds a run"):
        train_distributed(distributed_config(street_root, tmp_path, "taken"))
    # Ray not started yet (the cluster fixture comes later): the data path is checked here.
    with pytest.raises(FileNotFoundError, match="no folder for domain 'gta'"):
        train_distributed(distributed_config(tmp_path / "no-data", tmp_path, "no-data"))


# --------------------------------------------------------------------------------------- with Ray
@pytest.mark.slow
def test_two_workers_follow_the_single_process_run_of_the_same_global_batch(ray_cluster, street_root, tmp_path):
    common = ["train.max_steps=12", "train.log_every=3", "train.checkpoint_every=6", "train.keep_checkpoints=2"]
    fit(tiny_config(street_root, tmp_path / "single", "train.batch_size=2", *common), progress=False)
    result = train_distributed(distributed_config(street_root, tmp_path, "ddp", *common), progress=False)

    # Same global samples, and DDP's mean of the two per-rank gradients is the batch-2
    # gradient; only the latent noise of rank 1 differs from the single process's. Measured:
    # the weighted terms agree to ~1e-5 relative; the KL terms (means of small latent codes,
    # whose gradients carry the noise) drift by up to ~5% over 12 steps. A wrong sample
    # order or a missing rank would move every term by 10% or more (other images).
    single, ddp = read_log(tmp_path / "single"), read_log(tmp_path / "ddp")
    assert [entry["step"] for entry in ddp] == [entry["step"] for entry in single] == [3, 6, 9, 12]
    for one, two in zip(single, ddp):
        for name in (key for key in one if key.startswith(LOSS_PREFIXES)):
            tolerance = 0.15 if name.startswith("gen/kl") else 1e-3
            assert two[name] == pytest.approx(one[name], rel=tolerance), (one["step"], name, one[name], two[name])
    assert ddp[-1]["pairs_per_sec"] > 0

    final = tmp_path / "storage" / "ddp" / "step_00000012"
    replicas = json.loads((final / "replicas.json").read_text())
    assert [replica["rank"] for replica in replicas] == [0, 1]
    assert len({replica["node_id"] for replica in replicas}) == 1, "PACK should keep both workers on the head node"
    assert replicas[0]["weights_sha256"] == replicas[1]["weights_sha256"]
    assert stored_checkpoints(tmp_path / "storage" / "ddp") == ["step_00000006", "step_00000012"]
    assert result.step == 12 and result.started_from is None
    assert result.storage_checkpoint == str(final)
    assert load_checkpoint(result.checkpoint)["step"] == 12 and result.grid.is_file()

    # --resume: the same run, continued from its latest checkpoint in storage.
    longer = distributed_config(street_root, tmp_path, "ddp", *common, "train.max_steps=15")
    continued = train_distributed(longer, resume=True, progress=False)
    assert continued.step == 15 and continued.started_from == str(final)
    assert [entry["step"] for entry in read_log(tmp_path / "ddp")] == [3, 6, 9, 12, 15]
    assert stored_checkpoints(tmp_path / "storage" / "ddp") == ["step_00000012", "step_00000015"]


@pytest.mark.filterwarnings("ignore:.*training image\\(s\\) in domain")
def test_an_n_domain_model_trains_under_ddp_as_in_one_process(ray_cluster, tmp_path):
    from preprocessing.synthetic.dataset import generate_demo_dataset

    root = generate_demo_dataset("street", tmp_path / "conditions", train_count=8, test_count=0, size=32,
                                 domains=("day", "rain", "snow"))
    common = ["data.domains=[day, rain, snow]", "train.max_steps=4", "train.log_every=2", "train.checkpoint_every=4"]
    fit(tiny_config(root, tmp_path / "single", "train.batch_size=2", *common), progress=False)
    result = train_distributed(distributed_config(root, tmp_path, "ddp", *common), progress=False)
    single, ddp = read_log(tmp_path / "single"), read_log(tmp_path / "ddp")
    assert {"gen/cycle_snow", "gen/gan_rain", "dis/day"} <= ddp[-1].keys()
    for one, two in zip(single, ddp):  # as in the two-domain test above: only rank 1's latent noise differs
        for name in (key for key in one if key.startswith(LOSS_PREFIXES) and not key.startswith("gen/kl")):
            assert two[name] == pytest.approx(one[name], rel=1e-3), (one["step"], name, one[name], two[name])
    replicas = json.loads((tmp_path / "storage" / "ddp" / "step_00000004" / "replicas.json").read_text())
    assert replicas[0]["weights_sha256"] == replicas[1]["weights_sha256"]
    assert result.step == 4


@pytest.mark.slow
def test_cli_spreads_workers_over_two_nodes_with_the_cycle_loss_off(ray_cluster, street_root, tmp_path):
    # Cycle weights 0 drop the cycle streams from the generator pass: DDP must not wait for them.
    sets = [f"data.root={street_root}", "data.domain_a=gta", "data.domain_b=city", "data.image_size=32",
            "data.load_size=40", "model.width=8", "model.dis_width=8", "model.dis_layers=3", "model.res_blocks=2",
            "train.sample_count=2", "train.max_steps=6", "train.log_every=3", "train.checkpoint_every=3",
            f"train.out_dir={tmp_path / 'run'}", f"distributed.storage_path={tmp_path / 'storage'}",
            "distributed.placement_strategy=STRICT_SPREAD", "loss.cycle=0", "loss.kl_cycle=0"]
    command = [sys.executable, "-m", "unit_cli", "train", "--workers", "2", "--no-progress"]
    command += [part for value in sets for part in ("--set", value)]
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "RAY_ADDRESS": ray_cluster.address})
    assert finished.returncode == 0, finished.stderr[-3000:]
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    assert summary["step"] == 6 and summary["started_from"] is None
    assert summary["storage_checkpoint"] == str(tmp_path / "storage" / "run" / "step_00000006")

    replicas = json.loads((Path(summary["storage_checkpoint"]) / "replicas.json").read_text())
    assert len({replica["node_id"] for replica in replicas}) == 2, "STRICT_SPREAD should use both nodes"
    assert len({replica["weights_sha256"] for replica in replicas}) == 1
    log = read_log(tmp_path / "run")
    assert [entry["step"] for entry in log] == [3, 6] and "gen/cycle_a" not in log[-1]
    assert load_checkpoint(summary["checkpoint"])["step"] == 6


@pytest.mark.slow
def test_domain_adaptation_learns_under_ddp(ray_cluster, digits_root, tmp_path):
    # The variant with a tied D trunk, a classifier on source labels and batch norm: each worker
    # reads its shard's images with their own labels, and the alternating updates stay in step.
    cfg = adaptation_config(digits_root, tmp_path / "adapt", "train.max_steps=60", "train.log_every=20",
                            "train.checkpoint_every=60", "train.batch_size=8", "distributed.workers=2",
                            f"distributed.storage_path={tmp_path / 'storage'}")
    result = train_distributed(cfg, progress=False)
    assert result.step == 60
    replicas = json.loads((Path(result.storage_checkpoint) / "replicas.json").read_text())
    assert len(replicas) == 2 and len({replica["weights_sha256"] for replica in replicas}) == 1
    log = read_log(tmp_path / "adapt")
    assert [entry["step"] for entry in log] == [20, 40, 60]
    # Labels that did not belong to their images would leave the classifier at chance (0.1).
    assert log[-1]["dis/accuracy_a"] > 0.3 and log[-1]["dis/classifier"] < log[0]["dis/classifier"], log
    assert log[-1]["dis/classifier_translated"] < log[0]["dis/classifier_translated"], log


def train_worker_processes() -> list[psutil.Process]:
    """This test's own Ray Train workers: the cluster's processes are children of this process."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_last_checkpoint(ray_cluster, street_root, tmp_path):
    from ray.train.v2._internal.constants import CHECKPOINT_MANAGER_SNAPSHOT_FILENAME

    max_steps = 60
    cfg = distributed_config(street_root, tmp_path, "killed", f"train.max_steps={max_steps}", "train.log_every=5",
                             "train.checkpoint_every=5", "train.keep_checkpoints=2", "distributed.max_failures=1")
    run_folder = tmp_path / "storage" / "killed"
    snapshot = run_folder / CHECKPOINT_MANAGER_SNAPSHOT_FILENAME
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(train_distributed, cfg, progress=False)
        deadline = time.monotonic() + 300
        # Registered by Ray (not merely being uploaded): the restart can resume from it.
        while not (snapshot.is_file() and "step_0" in snapshot.read_text()):
            assert not running.done(), running.exception()
            assert time.monotonic() < deadline, "no checkpoint was registered in time"
            time.sleep(0.05)
        victims = train_worker_processes()
        assert len(victims) == 2, victims
        os.kill(victims[0].pid, signal.SIGKILL)
        result = running.result(timeout=600)

    assert result.step == max_steps
    assert result.started_from is not None, "the run was not restarted"
    resumed_step = int(result.started_from.rsplit("step_", 1)[1])
    assert 0 < resumed_step < max_steps and resumed_step % 5 == 0
    # Nothing lost or half-written: exactly the last keep_checkpoints, all loadable.
    kept = stored_checkpoints(run_folder)
    assert kept == [f"step_{max_steps - 5:08d}", f"step_{max_steps:08d}"]
    for name in kept:
        assert load_checkpoint(run_folder / name / "checkpoint.pt")["step"] == int(name.split("_")[1])
    assert load_checkpoint(result.checkpoint)["step"] == max_steps
    steps = [entry["step"] for entry in read_log(tmp_path / "killed")]
    assert steps == list(range(5, max_steps + 1, 5)), "the log should read as one run"


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on a free local port."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.slow
def test_checkpoints_go_to_s3_and_a_new_run_starts_from_one(ray_cluster, s3_endpoint, street_root, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="unit")
    storage = ["distributed.storage_path=s3://unit/runs", f"distributed.storage_endpoint_url={s3_endpoint}"]
    first = train_distributed(distributed_config(street_root, tmp_path, "first", *storage, "train.max_steps=6",
                                                 "train.checkpoint_every=3", "train.keep_checkpoints=1"),
                              progress=False)
    assert first.storage_checkpoint == "s3://unit/runs/first/step_00000006"
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="unit", Prefix="runs/first/")["Contents"]}
    assert {f"runs/first/step_00000006/{name}" for name in ("checkpoint.pt", "samples.png", "train_log.jsonl",
                                                             "replicas.json")} <= keys
    assert not any(key.startswith("runs/first/step_00000003/") for key in keys), "keep_checkpoints=1"
    assert load_checkpoint(first.checkpoint)["step"] == 6

    second = train_distributed(distributed_config(street_root, tmp_path, "second", *storage, "train.max_steps=8",
                                                  "train.checkpoint_every=4"),
                               resume=first.storage_checkpoint, progress=False)
    assert second.started_from == "s3://unit/runs/second/initial_checkpoint.pt"
    assert second.step == 8 and second.storage_checkpoint == "s3://unit/runs/second/step_00000008"
    # Steps 7 and 8 only: had it started from scratch, the log would also hold step 5.
    assert [entry["step"] for entry in read_log(tmp_path / "second")] == [8]
    started, finished = (load_checkpoint(run.checkpoint)["networks"]["gen"] for run in (first, second))
    assert started.keys() == finished.keys()
    assert any(not torch.equal(started[name], finished[name]) for name in started)
