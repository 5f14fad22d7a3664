"""The trace injector drives the local twin's spot capacity."""

import shutil

from tuner.cluster.launcher import load_launcher_config
from tuner.cluster.twin import twin_config
from tuner.config import ClusterConfig


def test_trace_injector_sets_the_twins_capacity_as_the_trace_says() -> None:
    """Each trace zone drives one worker type's maximum in the file the twin's autoscaler re-reads."""
    import json
    import threading

    from tests.tooling.traces import TraceInjector
    from tuner.cluster.twin import LocalTwin
    from tuner.plan.traces import Market, ZoneTrace

    up, down = True, False
    zones = [
        ZoneTrace("a", [up, down, down, up, up], [1.0] * 5, 3.0),
        ZoneTrace("b", [up, up, down, up, down], [1.0] * 5, 3.0),
    ]
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
    assert maxima()[2] == sum(t["max_workers"] for t in twin.autoscaler.read()["available_node_types"].values())
    injector.restore_all()
    assert maxima()[:2] == (1, 1)
    shutil.rmtree(twin.config_path.parent)  # the twin never started: nothing else to stop
