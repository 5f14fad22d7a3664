"""What the platform serves listens on 127.0.0.1 only; a user's code packages travel to a cluster's workers."""

import os
import re
from pathlib import Path

from tuner.cluster.connect import code_runtime_env, package_dir
from tuner.config import ClusterConfig

# Ray's core services (GCS, raylet, workers, agents) are gRPC servers that Ray binds to all
# interfaces or the node IP, whatever the caller asks: other nodes must reach them. They are
# protected by Ray's token authentication (on by default since Ray 2.5x), not by their address.
RAY_CORE = re.compile(r"gcs_server|raylet|ray::|dashboard/(agent|dashboard)\.py|autoscaler/_private/monitor\.py")
LOOPBACK = {"0100007F", "00000000000000000000FFFF0100007F", "00000000000000000000000001000000"}


def listeners() -> list[tuple[str, int, int, str]]:
    """(hex address, port, pid, command line) of every listening TCP socket on this machine."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                host, port = fields[1].split(":")
                sockets[fields[9]] = (host, int(port, 16))
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_text().replace("\0", " ")
            fds = list((proc / "fd").iterdir()) if proc.name.isdigit() else []
        except OSError:  # not a process, or gone meanwhile
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:[") and target[8:-1] in sockets:
                found.append((*sockets[target[8:-1]], int(proc.name), cmd))
    return found


def test_servers_we_start_bind_loopback_only() -> None:
    """The dashboard (no auth) and the metadata server listen on 127.0.0.1; anything listening
    elsewhere is one of Ray's own authenticated core services. A local search starts its own Ray
    even where a dead cluster's address file is left behind."""
    import ray

    from tests.tooling.metadata import MetadataServer
    from tuner.cluster.connect import connect

    port = 28265
    stale = Path("/tmp/ray/ray_current_cluster")  # what a killed `ray start` leaves: must not be joined
    planted = not stale.exists()
    if planted:
        stale.parent.mkdir(exist_ok=True)
        stale.write_text("127.0.0.1:1")
    metadata = MetadataServer("aws").start()
    try:
        connect(ClusterConfig(num_cpus=1, include_dashboard=True, dashboard_port=port))
        found = listeners()
    finally:
        ray.shutdown()
        metadata.stop()
        if planted:
            stale.unlink()
    ours = {p: host for host, p, _, _ in found if p in (port, int(metadata.url.rsplit(":", 1)[1]))}
    assert len(ours) == 2 and set(ours.values()) <= LOOPBACK, ours
    exposed = [(host, p, pid, cmd) for host, p, pid, cmd in found if host not in LOOPBACK]
    driver = [e for e in exposed if e[2] == os.getpid()]  # this process is Ray's driver: one core-worker RPC port
    assert len(driver) <= 1, driver
    # Match the whole command line: a deep install path pushes the script name far to the right.
    unexpected = [
        (host, p, pid, cmd[:160]) for host, p, pid, cmd in exposed if pid != os.getpid() and not RAY_CORE.search(cmd)
    ]
    assert not unexpected, unexpected


def test_only_user_packages_outside_this_project_are_shipped(tmp_path, monkeypatch) -> None:
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "train.py").write_text("def fit(config, settings):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert package_dir("mypkg.train:fit") == tmp_path / "mypkg"
    assert package_dir("workloads.classify:train") is None  # this project: installed on every node
    assert package_dir("optuna.samplers:TPESampler") is None  # site-packages
    assert code_runtime_env(["mypkg.train:fit", "search_spaces.mlp:space"]) == {"py_modules": [str(tmp_path / "mypkg")]}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # a Ray job: its working_dir ships the code
    assert code_runtime_env(["mypkg.train:fit"]) is None
