"""Ledger arithmetic against hand-computed cases; the budget projection."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import pytest

from tuner.config import CostConfig, ResourcesConfig
from tuner.cost.budget import BudgetStopper
from tuner.cost.ledger import CostLedger, Interval, price, trial_cost
from tuner.cost.pricing import InstanceShape, PricePoint

T0 = 1_700_000_000.0


class Prices:
    """A price source with hand-set numbers (the PriceSource protocol)."""

    shapes = {"g5.xlarge": InstanceShape(1, 4), "g5.12xlarge": InstanceShape(4, 48), "g6.xlarge": InstanceShape(1, 4)}
    on_demand_rates = {"g5.xlarge": 1.0, "g5.12xlarge": 6.0, "g6.xlarge": 0.8}
    spot = {"g5.xlarge": [PricePoint(T0, 0.3), PricePoint(T0 + 1800, 0.5)], "g5.12xlarge": [PricePoint(T0, 2.0)]}

    def shape(self, instance_type: str) -> Optional[InstanceShape]:
        return self.shapes.get(instance_type)

    def on_demand(self, instance_type: str, region: str) -> Optional[float]:
        return self.on_demand_rates.get(instance_type)

    def spot_history(self, instance_type, region, zone, start_s, end_s) -> list[PricePoint]:
        return self.spot.get(instance_type, [])


def interval(itype: str, market: str, start: float, end: float, share: float = 1.0, lost: float = 0.0) -> Interval:
    return Interval("n1", itype, market, "us-east-1", "us-east-1a", start, end, share, 1.0, lost_s=lost)


def test_price_change_mid_interval() -> None:
    p = price(interval("g5.xlarge", "spot", T0, T0 + 3600), Prices())
    assert p.cost_usd == pytest.approx(0.5 * 0.3 + 0.5 * 0.5) and p.on_demand_cost_usd == pytest.approx(1.0)


def test_fractional_gpu_share() -> None:
    p = price(interval("g5.12xlarge", "spot", T0, T0 + 1800, share=0.25), Prices())
    assert p.cost_usd == pytest.approx(2.0 * 0.5 * 0.25) and p.on_demand_cost_usd == pytest.approx(6.0 * 0.5 * 0.25)


def test_trial_moved_from_spot_g5_to_on_demand_g6() -> None:
    cost = trial_cost(
        [interval("g5.xlarge", "spot", T0, T0 + 1800), interval("g6.xlarge", "on-demand", T0 + 1800, T0 + 3600)],
        Prices(),
    )
    assert cost.cost_usd == pytest.approx(0.3 * 0.5 + 0.8 * 0.5)
    assert cost.on_demand_cost_usd == pytest.approx(1.0 * 0.5 + 0.8 * 0.5)
    assert cost.savings_pct == pytest.approx(100 * (1 - 0.55 / 0.9))
    assert cost.instance_types == "g5.xlarge,g6.xlarge" and cost.markets == "on-demand,spot"


def test_unknown_instance_type_is_unpriced_not_free() -> None:
    cost = trial_cost([interval("x9.mega", "spot", T0, T0 + 60)], Prices())
    assert not cost.priced and cost.cost_usd == 0.0


def result(
    node: str,
    itype: str,
    market: str,
    started: float,
    wall: float,
    lost: float = 0.0,
    pre: int = 0,
    epoch: int = 1,
    loss: float = 0.5,
) -> dict:
    return {
        "node_id": node,
        "instance_type": itype,
        "market": market,
        "zone": "us-east-1a",
        "region": "us-east-1",
        "attempt_started_s": started,
        "wall_s": wall,
        "lost_work_s": lost,
        "preemptions": pre,
        "epoch": epoch,
        "val_loss": loss,
    }


def ledger_for(cpu: float = 1, gpu: float = 1, **kw) -> CostLedger:
    """A search that minimises val_loss over epochs (nothing here assumes classification)."""
    search = SimpleNamespace(
        resources=ResourcesConfig(cpu=cpu, gpu=gpu),
        metric="val_loss",
        mode="min",
        time_attr="epoch",
        objectives=kw.pop("objectives", {}),
    )
    return CostLedger(kw.pop("cost", CostConfig()), "us-east-1", search, Prices(), **kw)  # type: ignore[arg-type]


def test_preempted_trial_pays_for_redone_work() -> None:
    """Spot g5 from T0 for 900 s, preempted; 300 s of work redone on an on-demand g6 from T0+1000 to T0+2800."""
    ledger = ledger_for()
    trial = SimpleNamespace(trial_id="t1")
    for wall in (T0 + 300, T0 + 600, T0 + 900):
        ledger.on_trial_result(0, [], trial, result("a", "g5.xlarge", "spot", T0, wall))
    for wall in (T0 + 1900, T0 + 2800):
        ledger.on_trial_result(
            0,
            [],
            trial,
            result("b", "g6.xlarge", "on-demand", T0 + 1000, wall, lost=300, pre=1, epoch=int((wall - T0) // 700)),
        )
    cost = ledger.cost_of("t1")
    g5 = 0.3 * 1200 / 3600  # 900 s reported + 300 s worked after the last report, then lost
    g6 = 0.8 * 1800 / 3600
    assert cost.cost_usd == pytest.approx(g5 + g6)
    assert cost.on_demand_cost_usd == pytest.approx(1.0 * 1200 / 3600 + g6)
    assert cost.lost_work_cost_usd == pytest.approx(0.3 * 300 / 3600)
    metrics = ledger.trial_metrics("t1")
    assert metrics["preemptions"] == 1 and metrics["lost_work_s"] == 300
    assert metrics["gpu_hours"] == pytest.approx(3000 / 3600)
    a, b = ledger.trials["t1"].intervals.values()
    assert (a.progress, b.progress) == (1.0, 3.0)  # epoch 1 on a, then 2..4 on b (epoch 2 redone there: once)


def test_a_search_that_optimises_cost_finds_it_in_each_result() -> None:
    """The searcher reads a trial's cost from its last result: the ledger adds it, priced up to that result."""
    ledger, plain = ledger_for(objectives={"cost_usd": "min", "val_acc": "max"}), ledger_for()
    trial = SimpleNamespace(trial_id="t")
    for wall, usd in ((T0 + 1800, 0.3 * 0.5), (T0 + 3600, 0.3 * 0.5 + 0.5 * 0.5)):  # the spot price rose at T0 + 1800
        seen, unseen = result("a", "g5.xlarge", "spot", T0, wall), result("a", "g5.xlarge", "spot", T0, wall)
        ledger.on_trial_result(0, [], trial, seen)
        plain.on_trial_result(0, [], trial, unseen)
        assert seen["cost_usd"] == pytest.approx(usd) and seen["cost_usd"] == ledger.cost_of("t").cost_usd
        assert "val_acc" not in seen and "cost_usd" not in unseen  # the trainer's objectives are its own to report


def test_best_value_follows_the_mode() -> None:
    ledger = ledger_for()
    trial = SimpleNamespace(trial_id="t")
    for i, loss in enumerate((0.9, 0.4, 0.6), start=1):
        ledger.on_trial_result(0, [], trial, result("a", "g5.xlarge", "spot", T0, T0 + i, epoch=i, loss=loss))
    ledger.on_trial_result(
        0, [], trial, {**result("a", "g5.xlarge", "spot", T0, T0 + 9, epoch=3, loss=0.1), "checkpoint_only": 1}
    )
    assert ledger.best("t") == 0.4 and ledger.best_overall() == 0.4  # a checkpoint-only result is no report


def test_local_run_without_labels_is_priced_as_the_assumed_type() -> None:
    ledger = ledger_for(gpu=0, cost=CostConfig(assumed_instance_type="g5.xlarge"))
    ledger.on_trial_result(0, [], SimpleNamespace(trial_id="t"), result("local", "", "", T0, T0 + 3600))
    assert ledger.assumed_used and ledger.cost_of("t").cost_usd == pytest.approx(0.4)  # one whole g5, spot
    assert ledger.trial_tags("t")["tuner.assumed_instance_type"] == "g5.xlarge"


def test_totals_add_up_and_utilization() -> None:
    ledger = ledger_for(head_instance_type="g6.xlarge")
    for tid in ("a", "b"):
        ledger.on_trial_result(0, [], SimpleNamespace(trial_id=tid), result("n", "g5.12xlarge", "spot", T0, T0 + 1800))
    totals = ledger.totals(wall_s=3600)
    assert totals["cost_usd"] == pytest.approx(2 * 2.0 * 0.5 * 0.25)
    assert totals["utilization_pct"] == pytest.approx(50.0)  # two 1-GPU trials on a 4-GPU node
    assert totals["head_cost_usd"] == pytest.approx(0.8)
    assert totals["campaign_cost_usd"] == pytest.approx(totals["cost_usd"] + 0.8)


def test_budget_stops_when_committed_plus_projected_exceeds() -> None:
    ledger = ledger_for()
    stopper = BudgetStopper(ledger, max_usd=0.2, time_attr="epoch", max_t=10)
    trial = SimpleNamespace(trial_id="t")
    ledger.on_trial_result(0, [], trial, result("a", "g6.xlarge", "on-demand", T0, T0 + 90))  # $0.02 for epoch 1
    assert not stopper("t", {"epoch": 1}) and not stopper.stop_all()  # projects 10 x $0.02 = $0.20
    ledger.on_trial_result(0, [], trial, result("a", "g6.xlarge", "on-demand", T0, T0 + 200))
    assert stopper("t", {"epoch": 2}) and stopper.stop_all()  # $0.044 + 8 x $0.022 > $0.20


def test_a_trial_on_several_nodes_pays_its_share_of_each() -> None:
    """Two workers (1 GPU each): rank 0 on a spot g5.12xlarge (4 GPUs), rank 1 on a spot g5.xlarge, for 30 min."""
    labels = {"b": {"instance_type": "g5.xlarge", "market": "spot", "zone": "us-east-1a", "region": "us-east-1"}}
    ledger = ledger_for(node_labels=labels.__getitem__)
    trial = SimpleNamespace(trial_id="t")
    for wall in (T0 + 900, T0 + 1800):
        ledger.on_trial_result(
            0, [], trial, {**result("a", "g5.12xlarge", "spot", T0, wall), "worker_nodes": "a,b", "world_size": 2}
        )
    a, b = ledger.trials["t"].intervals.values()
    assert (a.share, b.share) == (0.25, 1.0)
    assert ledger.cost_of("t").cost_usd == pytest.approx(2.0 * 0.5 * 0.25 + 0.3 * 0.5)
    assert ledger.cost_of("t").gpu_hours == pytest.approx(1.0)  # two GPUs for half an hour
