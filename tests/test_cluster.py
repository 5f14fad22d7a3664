"""The local twin is derived from cluster/aws.yaml; trials that cannot fit are refused up front;
what the platform serves listens on 127.0.0.1 only."""

import os
import re
import shutil
from pathlib import Path

import pytest

from tuner.cluster import HEAD_TYPE, check_fits, load_launcher_config, twin_config, worker_types
from tuner.config import ClusterConfig, ConfigError, ResourcesConfig
from tuner.labels import INSTANCE_TYPE, MARKET, ZONE


def test_twin_mirrors_the_aws_worker_types() -> None:
    aws = load_launcher_config("cluster/aws.yaml")
    twin = twin_config(aws, ClusterConfig(name="local_spot", max_workers_per_type=2, idle_timeout_minutes=0.5))
    assert twin["provider"]["type"] == "fake_multinode"
    assert set(twin["available_node_types"]) == set(worker_types(aws)) | {HEAD_TYPE}
    assert twin["available_node_types"][HEAD_TYPE]["resources"] == {"CPU": 0}
    for name, node_type in worker_types(aws).items():
        local = twin["available_node_types"][name]
        assert local["resources"] == node_type["resources"]  # fake GPUs, same counts
        assert local["labels"][INSTANCE_TYPE] == node_type["node_config"]["InstanceType"]
        assert local["labels"][MARKET] == node_type["labels"][MARKET]
        assert local["labels"][ZONE] in aws["provider"]["availability_zone"].split(",")
        assert local["min_workers"] == node_type["min_workers"]
        assert local["max_workers"] == min(node_type["max_workers"], 2)
    assert twin["idle_timeout_minutes"] == 0.5


def test_trial_that_fits_no_worker_type_is_refused() -> None:
    aws = load_launcher_config("cluster/aws.yaml")
    check_fits(aws, ResourcesConfig(cpu=4, gpu=1))
    check_fits(aws, ResourcesConfig(cpu=8, gpu=4))  # the 4-GPU type
    with pytest.raises(ConfigError, match="no worker type fits a trial needing cpu=1 gpu=8"):
        check_fits(aws, ResourcesConfig(cpu=1, gpu=8))


def test_unreadable_launcher_config() -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_launcher_config("cluster/nope.yaml")


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
    elsewhere is one of Ray's own authenticated core services."""
    import ray

    from tuner.chaos import MetadataServer
    from tuner.cluster import connect

    port = 28265
    metadata = MetadataServer("aws").start()
    connect(ClusterConfig(num_cpus=1, include_dashboard=True, dashboard_port=port), ResourcesConfig(cpu=1))
    try:
        found = listeners()
    finally:
        ray.shutdown()
        metadata.stop()
    ours = {p: host for host, p, _, _ in found if p in (port, int(metadata.url.rsplit(":", 1)[1]))}
    assert len(ours) == 2 and set(ours.values()) <= LOOPBACK, ours
    exposed = [(host, p, pid, cmd) for host, p, pid, cmd in found if host not in LOOPBACK]
    driver = [e for e in exposed if e[2] == os.getpid()]  # this process is Ray's driver: one core-worker RPC port
    assert len(driver) <= 1, driver
    # Match the whole command line: a deep install path pushes the script name far to the right.
    unexpected = [(host, p, pid, cmd[:160]) for host, p, pid, cmd in exposed if pid != os.getpid() and not RAY_CORE.search(cmd)]
    assert not unexpected, unexpected


def test_trace_injector_sets_the_twins_capacity_as_the_trace_says() -> None:
    """Each trace zone drives one worker type's maximum in the file the twin's autoscaler re-reads."""
    import json
    import threading

    from tuner.chaos import TraceInjector
    from tuner.cluster import LocalTwin
    from tuner.traces import Market, ZoneTrace

    up, down = True, False
    zones = [ZoneTrace("a", [up, down, down, up, up], [1.0] * 5, 3.0), ZoneTrace("b", [up, up, down, up, down], [1.0] * 5, 3.0)]
    cfg = ClusterConfig(name="local_spot", max_workers_per_type=2)
    twin = LocalTwin(twin_config(load_launcher_config("cluster/aws.yaml"), cfg), cfg)
    injector = TraceInjector(twin, {0: "spot_g5", 1: "spot_g6"}, Market("t", "V100", 60.0, 0.0, zones, 0.0, 1), 0, 0.01)

    def maxima() -> tuple[int, int, int]:
        config = json.loads(twin.config_path.read_text())
        types = config["available_node_types"]
        return types["spot_g5"]["max_workers"], types["spot_g6"]["max_workers"], config["max_workers"]

    injector.start()
    assert maxima()[:2] == (1, 1)
    injector.run(4, stop=threading.Event())  # ticks 1-4
    assert maxima()[:2] == (1, 0) and injector.removals == 3  # a at 1, b at 2 and at 4
    assert maxima()[2] == sum(t["max_workers"] for t in twin.config["available_node_types"].values())
    injector.restore_all()
    assert maxima()[:2] == (1, 1)
    shutil.rmtree(twin.config_path.parent)  # the twin never started: nothing else to stop
