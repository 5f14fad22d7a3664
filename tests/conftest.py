"""Shared fixtures: real servers on 127.0.0.1 (SeaweedFS S3, MLflow), always torn down."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.tooling import TUNER_RUN

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STARTUP_TRIES = 3
STARTUP_TIMEOUT_S = 60
CHROMIUM = "/usr/bin/chromium"


def free_port(max_port: int = 50000) -> int:
    """A free TCP port on 127.0.0.1 below ``max_port`` (SeaweedFS also uses port + 10000)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < max_port:
            return port
    raise RuntimeError("no free port")


def wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"port {port} not open after {timeout_s}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class S3Server:
    """A SeaweedFS S3 gateway with one signed identity; credentials live in ``env``."""

    endpoint_url: str
    access_key: str
    secret_key: str
    workdir: Path
    port: int
    proc: Optional[subprocess.Popen] = None
    ports: Optional[dict[str, int]] = None  # kept across restarts: the data dir remembers them

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def start(self) -> None:
        """Start (or restart, on the same ports and data) the server; return once it answers. A first start
        whose server exits at once (a port, or that port + 10000 for its gRPC, taken meanwhile by another
        process) is tried again on new ports. Its catalog listeners (Iceberg, Lance) are off: their ports
        are fixed, so a second server on the machine (another test run) could not start."""
        for attempt in range(1, STARTUP_TRIES + 1):
            first = self.ports is None
            ports = self.ports = self.ports or {name: free_port() for name in ("master", "volume", "filer")}
            with (self.workdir / "weed.log").open("ab") as log:
                self.proc = subprocess.Popen(
                    [
                        str(BIN / "weed"),
                        "server",
                        f"-dir={self.workdir / 'data'}",
                        "-ip=127.0.0.1",
                        "-ip.bind=127.0.0.1",
                        f"-master.port={ports['master']}",
                        f"-volume.port={ports['volume']}",
                        f"-filer.port={ports['filer']}",
                        "-s3",
                        f"-s3.port={self.port}",
                        f"-s3.config={self.workdir / 'identities.json'}",
                        "-volume.max=0",
                        "-master.volumeSizeLimitMB=64",
                        "-s3.port.iceberg=0",
                        "-s3.port.lance=0",  # fixed ports (8181, 9101): a second server would die
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                wait_for_port(self.port, self.proc)
                self._wait_for_an_answer()
                return
            except RuntimeError:
                stop(self.proc)  # one still up but not answering would hold its ports
                if not first or attempt == STARTUP_TRIES:
                    tail = (self.workdir / "weed.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"SeaweedFS did not start (log: {self.workdir / 'weed.log'}):\n{tail}") from None
                shutil.rmtree(self.workdir / "data")
                (self.workdir / "data").mkdir()
                self.ports, self.port = None, free_port()
                self.endpoint_url = f"http://127.0.0.1:{self.port}"

    def _wait_for_an_answer(self) -> None:
        """The gateway opens its port before the filer is ready (and before its gRPC port, which may fail)."""
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                self.client().list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def make_bucket(self) -> str:
        name = f"ckpt-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    workdir = tmp_path_factory.mktemp("seaweedfs")
    (workdir / "data").mkdir()
    access_key, secret_key = "tuner-test", f"secret-{secrets.token_hex(12)}"
    identities = {
        "identities": [
            {
                "name": "tuner",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (workdir / "identities.json").write_text(json.dumps(identities))
    port = free_port()
    server = S3Server(f"http://127.0.0.1:{port}", access_key, secret_key, workdir, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class MLflowServer:
    uri: str
    proc: subprocess.Popen


def start_mlflow_server(workdir: Path, port: int) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1 with a sqlite store in ``workdir`` (restartable on the same data)."""
    log = (workdir / "server.log").open("ab")
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{workdir / 'mlflow.db'}",
            "--artifacts-destination",
            str(workdir / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=workdir,
    )
    wait_for_port(port, proc, timeout_s=120)
    return proc


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLflowServer]:
    port = free_port()
    proc = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), port)
    try:
        yield MLflowServer(f"http://127.0.0.1:{port}", proc)
    finally:
        stop(proc)


def cli_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"PYTHONUNBUFFERED": "1", "AWS_EC2_METADATA_DISABLED": "true"})
    env.update(extra or {})
    return env


# Overrides that keep CLI runs small on a 2-core machine.
FAST = ["cluster.include_dashboard=false", "cluster.num_cpus=2"]


def run_cli(
    args: list[str], env: Optional[dict[str, str]] = None, timeout_s: float = 600
) -> subprocess.CompletedProcess:
    """``python -m tuner.run ARGS`` in a subprocess, as a user would run it (from a scratch directory)."""
    with tempfile.TemporaryDirectory(prefix="tuner-cli-") as cwd:
        return subprocess.run(
            [*TUNER_RUN, *args],
            cwd=cwd,
            env=cli_env(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )


def screenshot(url: str, shot: Path, width: int = 1200, height: int = 2400, wait_ms: int = 0) -> Any:
    """A headless Chromium screenshot of ``url`` as RGB pixels (rows x columns x 3); ``wait_ms`` of
    virtual time lets a JavaScript page (the MLflow UI) fetch and render before the shot."""
    import numpy as np
    from PIL import Image

    wait = [f"--virtual-time-budget={wait_ms}"] if wait_ms else []
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={shot.parent / 'chromium'}",
            f"--screenshot={shot}",
            f"--window-size={width},{height}",
            *wait,
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120 + wait_ms / 1000,
    )
    return np.asarray(Image.open(shot).convert("RGB")).astype(int)
