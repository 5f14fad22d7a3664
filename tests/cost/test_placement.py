"""Price-performance placement: the throughput fit, the choice and its reasons, the trial's selector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import pytest
from ray.tune.experiment import Trial

from tuner.config import ConfigError, PlacementConfig
from tuner.cost import placement, price_guard
from tuner.cost.placement import NodeType, Placement, Throughput
from tuner.spot.labels import INSTANCE_TYPE, MARKET

PRICES = {"g6.xlarge": 0.40, "g5.xlarge": 0.42, "g4dn.xlarge": 0.90}
SECONDS_PER_WORK = {"spot_g6": 2.0, "spot_g5": 1.0, "spot_g4dn": 1.0}  # seconds per unit for a batch of 64


@pytest.fixture(autouse=True)
def no_active_placement() -> Iterator[None]:
    """A placement made here is the driver's active one: gone after each test."""
    yield
    placement._ACTIVE = None
    price_guard.unblock_all()


def make(by: str = "throughput", slots: int = 4, clock: Optional[list[float]] = None) -> tuple[Placement, list[str]]:
    said: list[str] = []
    types = [
        NodeType(n, i, 0.25)
        for n, i in [("spot_g6", "g6.xlarge"), ("spot_g5", "g5.xlarge"), ("spot_g4dn", "g4dn.xlarge")]
    ]
    now = clock if clock is not None else [0.0]
    placed = Placement(
        PlacementConfig(by=by, wait_s=60),
        "epoch",
        {"CPU": 1.0},
        types,
        PRICES.get,
        lambda: {t.name: slots for t in types},
        {"batch_size": 1.0},
        say=said.append,
        clock=lambda: now[0],
    )
    return placed, said


def trial(trial_id: str, config: dict[str, Any], status: str = Trial.RUNNING) -> Any:
    return SimpleNamespace(trial_id=trial_id, config=config, status=status)


def run_epochs(placed: Placement, t: Any, node_type: str, epochs: int) -> None:
    """Results as a trial on ``node_type`` reports them: its seconds per epoch scale with its batch."""
    per_epoch = SECONDS_PER_WORK[node_type] * t.config["batch_size"] / 64
    for epoch in range(1, epochs + 1):
        result = {
            "node_group": node_type,
            "attempt_started_s": 1.0,
            "train_time_s": 0.3 + epoch * per_epoch,
            "epoch": epoch,
        }
        placed.on_trial_result(0, [], t, result)


def test_types_are_compared_per_unit_of_work_with_each_trials_work_factored_out() -> None:
    # The fast type only ever ran heavy trials, the slow one light ones: raw seconds per epoch would call
    # the fast type slower (2.0 s vs 1.0 s); per unit of work (declared: ~ depth^1 width^2) it is twice as fast.
    speed = Throughput({"depth": 1.0, "width": 2.0})
    for i, (node_type, depth, width) in enumerate(
        [("spot_g5", 20, 32), ("spot_g5", 20, 32), ("spot_g6", 8, 16), ("spot_g6", 14, 16)]
    ):
        per_epoch = SECONDS_PER_WORK[node_type] * depth * width**2 / (14 * 16**2)
        for epoch in range(1, 4):
            speed.observe(f"t{i}", {"depth": depth, "width": width}, node_type, "a", epoch * per_epoch, epoch)
    predicted = speed.seconds_per_unit({"depth": 14, "width": 16})
    assert predicted["spot_g5"] == pytest.approx(1.0, rel=0.01)
    assert predicted["spot_g6"] == pytest.approx(2.0, rel=0.01)


def test_a_restart_or_a_move_starts_a_new_measurement() -> None:
    speed = Throughput({})
    speed.observe("t", {}, "spot_g5", "a", 10.0, 10)
    speed.observe("t", {}, "spot_g6", "b", 12.0, 11)  # moved after a preemption: no delta across types
    speed.observe("t", {}, "spot_g6", "b", 16.0, 12)
    assert speed.totals == {"spot_g6": [4.0, 1.0]}


def test_first_by_price_then_by_measured_cost_per_unit_and_the_reason_is_said() -> None:
    placed, said = make()
    config = {"batch_size": 64}
    first = placed.choose(config)
    assert first is not None and first.node_type == "spot_g6" and "cheapest spot price" in first.reason
    t1 = trial("t1", config)
    placed.on_trial_start(0, [], t1)
    assert said[-1].startswith("placement: trial t1 -> g6.xlarge")
    run_epochs(placed, t1, "spot_g6", 4)
    # g5 is unmeasured: optimistically as fast as 2x the fastest measured, it could be cheaper: tried
    t2 = trial("t2", {"batch_size": 64})
    second = placed.choose(t2.config)
    assert second is not None and second.node_type == "spot_g5" and "not measured yet" in second.reason
    placed.on_trial_start(0, [], t2)
    run_epochs(placed, t2, "spot_g5", 4)
    # measured: g5 half the seconds at 5 % more per hour; g4dn (unmeasured) could not win even twice as fast
    third = placed.choose(config)
    assert third is not None and third.node_type == "spot_g5"
    expected = 0.42 * 0.25 * 1.0 / 3600
    assert third.usd_per_unit == pytest.approx(expected, rel=0.01)
    assert "s/epoch measured" in third.reason and "next g4dn.xlarge" in third.reason
    assert placed.choose(config).node_type == "spot_g5"  # type: ignore[union-attr]


def test_price_only_placement_ignores_measurements() -> None:
    placed, _ = make(by="price")
    t1 = trial("t1", {"batch_size": 64})
    placed.choose(t1.config)
    placed.on_trial_start(0, [], t1)
    run_epochs(placed, t1, "spot_g6", 4)
    assert placed.choose(t1.config).node_type == "spot_g6"  # type: ignore[union-attr]


def test_a_full_blocked_or_short_type_is_passed_over_and_none_left_means_any() -> None:
    clock = [0.0]
    placed, said = make(slots=1, clock=clock)
    config = {"batch_size": 64}
    assert placed.choose(config).node_type == "spot_g6"  # type: ignore[union-attr]
    assert placed.choose(config).node_type == "spot_g5"  # type: ignore[union-attr]  # g6's one slot is taken
    price_guard._BLOCKED.add("g4dn.xlarge")
    assert placed.choose(config) is None  # every type full or blocked: any type will do
    price_guard.unblock_all()
    # the trial waiting for g6 waits past wait_s: g6 is short until a trial runs there again
    waiting = trial("t1", config, Trial.PENDING)
    placed.on_step_end(0, [waiting])
    clock[0] = 61.0
    placed.on_step_end(0, [waiting])
    assert placed.short == {"spot_g6"} and "waited 61 s for g6.xlarge" in said[-1]
    placed.on_trial_result(
        0, [], waiting, {"node_group": "spot_g6", "attempt_started_s": 1, "train_time_s": 1.0, "epoch": 1}
    )
    assert placed.short == set()


def test_the_trial_asks_for_its_types_resource_and_is_kept_off_blocked_types() -> None:
    placed, _ = make()
    price_guard._BLOCKED.add("g6.xlarge")
    resources = placement.trial_resources({"CPU": 1.0}, {"batch_size": 64})
    assert resources.bundles == [{"CPU": 1.0, "type:g5.xlarge": placement.PLACED_UNITS}]
    assert resources._bound.arguments["bundle_label_selector"] == [{INSTANCE_TYPE: "!in(g6.xlarge)"}]
    placement._ACTIVE = None
    price_guard.unblock_all()
    assert "bundle_label_selector" not in placement.trial_resources({"CPU": 1.0}, {})._bound.arguments


def test_bad_placement_settings_fail_at_compose_time() -> None:
    with pytest.raises(ConfigError, match="placement.by='speed'"):
        PlacementConfig(by="speed")
    with pytest.raises(ConfigError, match="explore_speedup"):
        PlacementConfig(explore_speedup=0.5)


def test_work_scaling_names_positive_numbers_the_space_suggests() -> None:
    from tuner.run.build import check_work_scaling

    def space(trial: Any) -> None:
        trial.suggest_categorical("batch_size", [32, 64])
        trial.suggest_categorical("optimizer", ["sgd", "adam"])

    search = SimpleNamespace(space="m:space", work_scaling={"batch_size": 1.0})
    check_work_scaling(space, search)  # type: ignore[arg-type]
    for bad, message in [("depth", "not a hyperparameter"), ("optimizer", "positive numeric")]:
        search.work_scaling = {bad: 1.0}
        with pytest.raises(ConfigError, match=message):
            check_work_scaling(space, search)  # type: ignore[arg-type]


def test_a_trial_that_lost_its_node_is_placed_afresh_before_it_asks_again() -> None:
    placed, _ = make(slots=1)
    config = {"batch_size": 64}
    placed.choose(config)
    asked: list[Any] = []
    lost = SimpleNamespace(trial_id="t1", config=config, status=Trial.RUNNING, update_resources=asked.append)
    placed.on_trial_start(0, [], lost)
    assert placed.running == {"t1": "spot_g6"}
    placed.on_trial_recover(0, [], lost)  # its type still has its one slot: chosen again
    assert asked[-1].bundles == [{"CPU": 1.0, "type:g6.xlarge": placement.PLACED_UNITS}]
    placed.slots = lambda: {"spot_g6": 0, "spot_g5": 1, "spot_g4dn": 1}  # its type lost its capacity meanwhile
    placed.on_trial_recover(0, [], lost)
    assert asked[-1].bundles == [{"CPU": 1.0, "type:g5.xlarge": placement.PLACED_UNITS}]


def launcher(*types: tuple[str, str, bool]) -> dict[str, Any]:
    """A cluster config of spot types (name, instance type, declares its type resource)."""
    nodes: dict[str, Any] = {"head": {"resources": {"CPU": 0}}}
    for name, itype, steerable in types:
        resources = {"CPU": 4, "GPU": 1, **({placement.type_resource(itype): 1000} if steerable else {})}
        nodes[name] = {"resources": resources, "max_workers": 2, "labels": {INSTANCE_TYPE: itype, MARKET: "spot"}}
    return {"head_node_type": "head", "available_node_types": nodes}


def test_the_cluster_config_decides_whether_there_is_anything_to_place(tmp_path: Path) -> None:
    from tuner.cluster.autoscaler import AutoscalerConfig
    from tuner.config import SearchConfig
    from tuner.cost.pricing import Catalog

    search = SearchConfig(name="s", trainer="m:f", space="m:s", metric="acc", mode="max", max_t=1)
    said: list[str] = []

    def placed(config: dict[str, Any], steered: bool = True) -> Optional[Placement]:
        autoscaler = AutoscalerConfig(tmp_path / "autoscaler.json")
        autoscaler.write(config)
        path = str(autoscaler.path) if steered else None
        return placement.placement_for(PlacementConfig(), search, config, path, Catalog(), "us-east-1", said.append)

    assert placed(launcher(("spot_g5", "g5.xlarge", True), ("spot_g6", "g6.xlarge", True)), steered=False) is None
    assert said[-1].startswith("placement: off: the on-demand types carry every spot type's resource")

    both = placed(launcher(("spot_g5", "g5.xlarge", True), ("spot_g6", "g6.xlarge", True), ("spot_x", "x9.huge", True)))
    # the unpriced one is never chosen
    assert both is not None and [t.name for t in both.types] == [
        "spot_g5",
        "spot_g6",
    ]
    assert both.slots()["spot_g5"] == 2 * 4 and placement._ACTIVE is both
    assert placed(launcher(("spot_g5", "g5.xlarge", True))) is None and placement._ACTIVE is None
    assert said[-1] == "placement: off: one priced spot type (g5.xlarge): nothing to choose"
    assert placed(launcher(("spot_g5", "g5.xlarge", False), ("spot_g6", "g6.xlarge", True))) is None
    assert said[-1] == 'placement: off: add "type:g5.xlarge": 1000 to spot_g5 in resources (as in cluster/aws.yaml)'
    with pytest.raises(ConfigError, match=r"no spot worker type of the cluster config is priced \(spot_x\)"):
        placed(launcher(("spot_x", "x9.huge", True)))
