"""Start, stop and check the local services of the pipeline, bound to 127.0.0.1.

    python infra/local/services.py start [--with-s3]   # S3 store (optional), MLflow, Prefect, deployments
    python infra/local/services.py status
    python infra/local/services.py stop

State lives in ``.services/`` (``UNIT_SERVICES_DIR``): one log per service in ``logs/``,
PID files in ``pids/``, the Prefect and MLflow SQLite databases, MLflow artifacts and the
S3 store's objects as plain files. Flow runs work in ``UNIT_WORKDIR`` (the repository). Ports: ``UNIT_PREFECT_PORT`` (4200), ``UNIT_MLFLOW_PORT``
(5000), ``UNIT_S3_PORT`` (9000), ``UNIT_RUNNER_PORT`` (4280: health of the process serving the
deployments). Ray is not a service here: training starts a local Ray instance on demand, or
joins the cluster named by ``RAY_ADDRESS``.

The S3 store's key is made at random on first use and kept in ``.services/aws-credentials``
(mode 0600, the AWS credentials-file format); it reaches the store and the clients through
the environment (``AWS_SHARED_CREDENTIALS_FILE``), never a command line or ``env``'s output.
"""

from __future__ import annotations

import argparse
import configparser
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
S3_BUCKET = "unit"
S3_ACCESS_KEY_ID = "unit-local"
S3_REGION = "us-east-1"

# Settings that keep the services small and quiet on a laptop.
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DVC_NO_ANALYTICS": "1",
}


def work_dir() -> Path:
    """Where served flow runs read params.yaml and presets/ and write data/ and runs/."""
    return Path(os.environ.get("UNIT_WORKDIR", REPO)).resolve()


def state_dir() -> Path:
    return Path(os.environ.get("UNIT_SERVICES_DIR", REPO / ".services")).resolve()


def port(name: str, default: int) -> int:
    return int(os.environ.get(f"UNIT_{name}_PORT", default))


def s3_credentials() -> tuple[Path, str]:
    """The local S3 store's credentials file (made on first use, mode 0600) and its secret key."""
    path = state_dir() / "aws-credentials"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(24)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(f"[default]\naws_access_key_id = {S3_ACCESS_KEY_ID}\naws_secret_access_key = {secret}\n")
    parser = configparser.ConfigParser()
    parser.read(path, encoding="utf-8")
    return path, parser["default"]["aws_secret_access_key"]


def s3_client_env() -> dict[str, str]:
    path, _ = s3_credentials()
    return {"AWS_SHARED_CREDENTIALS_FILE": str(path), "AWS_DEFAULT_REGION": S3_REGION}


@dataclass
class Service:
    name: str
    command: list[str]
    health_url: str
    env: dict[str, str] = field(default_factory=dict)
    start_timeout: float = 120.0
    healthy_statuses: tuple[int, ...] = (200,)

    @property
    def pid_file(self) -> Path:
        return state_dir() / "pids" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return state_dir() / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        try:  # reap it if it is our own child that has exited (a zombie still answers kill 0)
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return None
        except ChildProcessError:
            pass
        return pid

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return response.status in self.healthy_statuses
        except urllib.error.HTTPError as error:
            return error.code in self.healthy_statuses
        except (urllib.error.URLError, OSError):
            return False


def client_env(with_s3: bool) -> dict[str, str]:
    """What a client (flow, ``unit`` command, test) needs to talk to the services."""
    env = {
        **QUIET_ENV,
        "PREFECT_API_URL": f"http://{HOST}:{port('PREFECT', 4200)}/api",
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{port('MLFLOW', 5000)}",
    }
    if with_s3:
        env |= {**s3_client_env(), "AWS_ENDPOINT_URL": f"http://{HOST}:{port('S3', 9000)}",
                "MLFLOW_S3_ENDPOINT_URL": f"http://{HOST}:{port('S3', 9000)}"}
    return env


def services(with_s3: bool) -> list[Service]:
    state = state_dir()
    s3_url = f"http://{HOST}:{port('S3', 9000)}"
    listed = []
    if with_s3:
        _, secret = s3_credentials()
        listed.append(Service(
            "s3",
            [str(BIN / "rclone"), "serve", "s3", str(state / "s3"), "--addr", f"{HOST}:{port('S3', 9000)}",
             "--force-path-style=true"],
            f"{s3_url}/",
            # rclone reads --auth-key from here; quoted, since its list flags split on commas.
            env={"RCLONE_AUTH_KEY": f'"{S3_ACCESS_KEY_ID},{secret}"'},
            start_timeout=30,
            healthy_statuses=(200, 400, 403),  # an anonymous request is refused: the server is up
        ))
    artifacts = f"s3://{S3_BUCKET}/mlflow" if with_s3 else str(state / "mlflow" / "artifacts")
    mlflow_port = port("MLFLOW", 5000)
    listed.append(Service(
        "mlflow",
        [str(BIN / "mlflow"), "server", "--host", HOST, "--port", str(mlflow_port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{state / 'mlflow' / 'mlflow.db'}", "--artifacts-destination", artifacts],
        f"http://{HOST}:{mlflow_port}/health",
        env=({**s3_client_env(), "MLFLOW_S3_ENDPOINT_URL": s3_url} if with_s3 else {}),
    ))
    prefect_port = port("PREFECT", 4200)
    listed.append(Service(
        "prefect",
        [str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(prefect_port)],
        f"http://{HOST}:{prefect_port}/api/health",
        env={"PREFECT_HOME": str(state / "prefect"),
             "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{state / 'prefect' / 'prefect.db'}"},
    ))
    # The process that serves the flow's deployments and runs them. Its health is asked of that
    # process itself (the runner's own web server, which answers once the deployments are
    # registered and while it polls for work): a deployment record left in Prefect's database
    # by an earlier run would pass a check made against the server.
    runner_port = port("RUNNER", 4280)
    listed.append(Service(
        "deployments",
        [sys.executable, "-m", "flows.serve"],
        f"http://{HOST}:{runner_port}/health",
        env={"PREFECT_HOME": str(state / "prefect-client"), "PREFECT_RUNNER_SERVER_ENABLE": "true",
             "PREFECT_RUNNER_SERVER_HOST": HOST, "PREFECT_RUNNER_SERVER_PORT": str(runner_port)},
    ))
    return listed


def start_one(service: Service, env: dict[str, str]) -> None:
    if service.pid() is not None and service.healthy():
        print(f"{service.name}: already running (pid {service.pid()})")
        return
    if service.healthy():
        raise SystemExit(f"{service.name}: something else already answers {service.health_url}; stop it or set another port")
    for folder in (service.pid_file.parent, service.log_file.parent):
        folder.mkdir(parents=True, exist_ok=True)
    with service.log_file.open("ab") as log:
        process = subprocess.Popen(
            service.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env, **service.env}, cwd=work_dir(), start_new_session=True,
        )
    service.pid_file.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + service.start_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{service.name}: exited with status {process.returncode} while starting; see {service.log_file}")
        if service.healthy():
            print(f"{service.name}: running (pid {process.pid}) at {service.health_url.rsplit('/', 1)[0]}")
            return
        time.sleep(0.5)
    stop_one(service)
    raise SystemExit(f"{service.name}: not healthy after {service.start_timeout:.0f} s; see {service.log_file}")


def stop_one(service: Service, grace: float = 20.0) -> None:
    pid = service.pid()
    if pid is None:
        service.pid_file.unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGTERM)  # the service's whole process group: servers fork workers
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and service.pid() is not None:
        time.sleep(0.2)
    if service.pid() is not None:
        os.killpg(pid, signal.SIGKILL)
    service.pid_file.unlink(missing_ok=True)
    print(f"{service.name}: stopped")


def create_bucket() -> None:
    (state_dir() / "s3" / S3_BUCKET).mkdir(parents=True, exist_ok=True)  # rclone serves folders as buckets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("start", "stop", "status", "env"))
    parser.add_argument("--with-s3", action="store_true", help="also run a local S3-compatible store for artifacts and data")
    args = parser.parse_args(argv)
    with_s3 = args.with_s3 or (state_dir() / "pids" / "s3.pid").exists()
    listed = services(with_s3)
    env = client_env(with_s3)
    if args.action == "start":
        if with_s3:
            create_bucket()
        for service in listed:
            start_one(service, env)
    elif args.action == "stop":
        for service in reversed(listed):
            stop_one(service)
    elif args.action == "status":
        for service in listed:
            pid = service.pid()
            state = "healthy" if service.healthy() else ("starting or failing" if pid else "stopped")
            print(f"{service.name:8} {state:20} pid {pid or '-':<8} log {service.log_file}")
    else:
        for key, value in env.items():
            print(f"export {key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
