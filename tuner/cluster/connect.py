"""Connecting the driver to where trials run: this machine, a running cluster, or the local twin.

A user's trainer and space live in the user's own repository, not in this package. On a
cluster whose nodes do not share the driver's disk, their top-level packages travel to
the workers through Ray's ``runtime_env`` (``py_modules``), unless the driver already runs
as a Ray job with a working directory (``ray job submit --working-dir .``), which ships
them itself. Packages of an installed distribution (this project on every node, the
libraries of the environment) are not shipped: the cluster installs the same ones.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sysconfig
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import ray

from tuner import _ray
from tuner.cluster.launcher import load_launcher_config
from tuner.cluster.twin import LocalTwin, twin_config
from tuner.config import ClusterConfig, ConfigError

GCS_PROBE_TIMEOUT_S = 5.0  # a head that does not accept a connection within this is not there
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor in a submitted job's driver


PROJECT_ROOT = Path(__file__).resolve().parents[2]  # this checkout: installed on every node of a cluster


def installed(where: Path) -> bool:
    """True for code every node has: the environment's libraries and this project's packages."""
    paths = sysconfig.get_paths()
    roots = {Path(paths[key]).resolve() for key in ("purelib", "platlib", "stdlib")} | {PROJECT_ROOT}
    return any(where.is_relative_to(root) for root in roots)


def package_dir(spec: str) -> Optional[Path]:
    """The directory of the top-level package a ``module:function`` spec lives in, if it must be shipped."""
    name = spec.partition(":")[0].split(".")[0]
    where = getattr(importlib.import_module(name), "__file__", None)
    if where is None or Path(where).name != "__init__.py":
        return None  # a namespace package or a single-file module: only packages can be shipped
    directory = Path(where).resolve().parent
    return None if installed(directory) else directory


def code_runtime_env(specs: Iterable[str]) -> Optional[dict[str, Any]]:
    """``runtime_env`` that ships the user's packages behind ``specs`` to the cluster's workers."""
    if JOB_ENV in os.environ:
        return None
    dirs = sorted({str(d) for d in map(package_dir, specs) if d is not None})
    return {"py_modules": dirs} if dirs else None


def check_reachable(address: str, cluster: str) -> None:
    """Fail in seconds, with one line, when no Ray head answers at ``address``: ``ray.init`` would retry for
    minutes, printing Ray's own warnings (a stale ``auto`` or a head that is not up, or not port-forwarded)."""
    try:
        gcs = _ray.bootstrap_address(address)
    except ConnectionError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(f"cluster={cluster}: no Ray cluster found for address {address!r} ({reason})") from exc
    host, _, port = gcs.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=GCS_PROBE_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        where = gcs if gcs == address else f"{gcs} (cluster.address={address})"
        raise ConfigError(
            f"cluster={cluster}: no Ray head answers at {where} ({exc}): start the cluster, or run the driver on its "
            "head (`ray job submit`), or set cluster.address"
        ) from exc


def connect(cfg: ClusterConfig, code: Iterable[str] = ()) -> tuple[Any, Optional[LocalTwin]]:
    """``ray.init`` for this cluster config (starting the twin first); returns (context, twin)."""

    _ray.quiet_token_auth_notice()
    twin = None
    address = cfg.address
    if cfg.name == "local_spot":
        if cfg.launcher_config is None:
            raise ValueError("cluster=local_spot needs cluster.launcher_config")
        twin = LocalTwin(twin_config(load_launcher_config(cfg.launcher_config), cfg), cfg)
        address = twin.start()
        _ray.use_local_token()  # joined by its address, which Ray does not authenticate by itself
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # Start Ray on this machine, whatever /tmp/ray/ray_current_cluster says: a stale file left by a
        # killed `ray start` would otherwise turn this into a connect to a cluster that is not ours.
        address = "local"
    kwargs: dict[str, Any] = {"address": address, "logging_level": logging.WARNING, "log_to_driver": False}
    if address == "local":
        kwargs.update(
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus,
            include_dashboard=cfg.include_dashboard,
            dashboard_host=cfg.dashboard_host,
            dashboard_port=cfg.dashboard_port,
        )
    else:  # the workers may not share this disk: ship the user's code
        target = address or os.environ.get("RAY_ADDRESS", "")
        if twin is None and "://" not in target:  # a Ray client or job server address: Ray says what is wrong
            check_reachable(target, cfg.name)
        runtime_env = code_runtime_env(code)
        if runtime_env:
            print(f"shipping to the cluster (runtime_env py_modules): {', '.join(runtime_env['py_modules'])}")
            kwargs["runtime_env"] = runtime_env
    try:
        return ray.init(**kwargs), twin
    except Exception:
        if twin is not None:
            twin.stop()
        raise
