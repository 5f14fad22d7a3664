"""Replacement capacity at a notice: what the driver asks the autoscaler for, and when it takes it back.

The Ray side (the autoscaler launching the asked-for node before the noticed one goes, no request left after a
search) is in tests/e2e/test_replacement.py; here the rule, with Tune trials as the callback sees them."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from ray.tune.experiment import Trial

from tests.cost.test_placement import make
from tuner.cost import placement, price_guard
from tuner.cost.replacement import Replacement

BUNDLE = {"CPU": 1.0, "GPU": 1.0}


@pytest.fixture(autouse=True)
def no_active_placement() -> Iterator[None]:
    yield
    placement._ACTIVE = None
    price_guard.unblock_all()


def trial(trial_id: str, itype: str, status: str = Trial.RUNNING) -> Any:
    bundle = {**BUNDLE, f"type:{itype}": 0.001}
    return SimpleNamespace(
        trial_id=trial_id,
        config={"batch_size": 64},
        status=status,
        placement_group_factory=SimpleNamespace(bundles=[bundle]),
    )


class Cluster:
    """The drains the driver sees and the requests it sends, on a clock the test moves."""

    def __init__(self) -> None:
        self.draining: dict[str, int] = {}
        self.requests: list[list[dict[str, float]]] = []
        self.now = 0.0

    def replacement(self, with_placement: bool = True) -> tuple[Replacement, list[str]]:
        said: list[str] = []
        placed = make()[0] if with_placement else None
        watcher = Replacement(
            BUNDLE,
            placed,
            probe=lambda: dict(self.draining),
            request=self.requests.append,
            say=said.append,
            clock=lambda: self.now,
            wall=lambda: self.now,
        )
        return watcher, said

    def step(self, watcher: Replacement, trials: list[Any]) -> None:
        self.now += 1.0
        watcher.on_step_end(0, trials)


def report(watcher: Replacement, t: Any, node: str, itype: str) -> None:
    watcher.on_trial_result(0, [], t, {"node_id": node, "instance_type": itype, "epoch": 1})


def running(watcher: Replacement, itype_a: str, itype_b: str) -> tuple[Any, Any]:
    """Trials a and b, each reporting from its node (n1, n2) of the given instance type."""
    a, b = trial("a", itype_a), trial("b", itype_b)
    report(watcher, a, "n1", itype_a)
    report(watcher, b, "n2", itype_b)
    return a, b


def test_a_notice_asks_for_the_trials_place_on_another_type_and_the_restart_takes_it_back() -> None:
    cluster = Cluster()
    watcher, said = cluster.replacement()
    a, b = running(watcher, "g6.xlarge", "g6.xlarge")
    cluster.step(watcher, [a, b])
    assert cluster.requests == []  # no notice, nothing asked

    cluster.draining = {"n1": 60_000}  # its deadline in 58 s: sooner than a node's launch and margin (lead_s)
    cluster.step(watcher, [a, b])
    # both running trials' bundles (each absorbed by its node, a's by the draining one) + a's replacement,
    # on the next cheapest type: g6 is the one being reclaimed
    (asked,) = cluster.requests
    g5 = {**BUNDLE, "type:g5.xlarge": 0.001}
    assert asked == [a.placement_group_factory.bundles[0], g5, b.placement_group_factory.bundles[0]]
    assert "trial a's node n1 (g6.xlarge) got a notice: asked the autoscaler for its next place on g5.xlarge" in said[0]
    assert watcher.placement is not None and watcher.placement.replacements["a"].instance_type == "g5.xlarge"
    cluster.step(watcher, [a, b])
    assert len(cluster.requests) == 1  # unchanged: not asked again

    # the node goes; the trial restarts where capacity was asked for (placement.place_again takes the decision)
    cluster.draining = {}
    a.status = Trial.PENDING
    cluster.step(watcher, [a, b])
    assert cluster.requests[-1] == [g5, b.placement_group_factory.bundles[0]]
    a.status = Trial.RUNNING
    report(watcher, a, "n3", "g5.xlarge")
    assert "trial a runs again, 2.0 s after its next place was asked for" in said[-1]
    cluster.step(watcher, [a, b])
    assert cluster.requests[-1] == []  # withdrawn
    watcher.withdraw()
    assert len(cluster.requests) == 3  # nothing more to withdraw


def test_the_next_node_is_asked_for_a_launch_before_the_deadline_not_earlier() -> None:
    """Asked for at an early notice, the new node would be paid while the trial still trains on the old one."""
    cluster = Cluster()
    watcher, said = cluster.replacement()
    a = trial("a", "g6.xlarge")
    report(watcher, a, "n1", "g6.xlarge")
    cluster.draining = {"n1": 121_000}  # AWS's two minutes
    cluster.step(watcher, [a])
    assert cluster.requests == [] and said == []  # 120 s left: more than lead_s (90 s)
    cluster.now = 30.0
    cluster.step(watcher, [a])
    assert len(cluster.requests) == 1 and said[-1].endswith("on g5.xlarge, 90 s before its deadline"), said


def test_notices_on_two_nodes_combine_into_one_request() -> None:
    cluster = Cluster()
    watcher, _ = cluster.replacement()
    a, b = running(watcher, "g6.xlarge", "g5.xlarge")
    cluster.draining = {"n1": 1, "n2": 1}
    cluster.step(watcher, [a, b])
    (asked,) = cluster.requests
    assert len(asked) == 4 and {"type:g5.xlarge", "type:g6.xlarge"} <= {k for r in asked[1::2] for k in r}


def test_without_a_type_to_ask_for_nothing_is_asked() -> None:
    """An unpinned bundle would be absorbed by the draining node (counted as idle) and keep it up."""
    cluster = Cluster()
    watcher, said = cluster.replacement(with_placement=False)
    a = trial("a", "g6.xlarge")
    report(watcher, a, "n1", "g6.xlarge")
    cluster.draining = {"n1": 1}
    cluster.step(watcher, [a])
    assert cluster.requests == [] and "no other spot type to ask for" in said[-1]


def test_a_trial_that_ended_before_or_after_its_notice_is_not_asked_for() -> None:
    cluster = Cluster()
    watcher, _ = cluster.replacement()
    a = trial("a", "g6.xlarge", status=Trial.TERMINATED)
    report(watcher, a, "n1", "g6.xlarge")
    cluster.draining = {"n1": 1}
    cluster.step(watcher, [a])
    assert cluster.requests == []  # finished before the notice: nothing to replace

    b = trial("b", "g6.xlarge")
    report(watcher, b, "n1", "g6.xlarge")
    cluster.step(watcher, [a, b])
    assert len(cluster.requests[-1]) == 2
    b.status = Trial.TERMINATED  # finished during the notice (or stopped by the scheduler, the budget)
    cluster.step(watcher, [a, b])
    assert cluster.requests[-1] == [] and watcher.noticed == {}


def test_a_failing_request_is_said_and_tried_again() -> None:
    cluster = Cluster()
    calls: list[list[dict[str, float]]] = []

    def flaky(bundles: list[dict[str, float]]) -> None:
        calls.append(bundles)
        if len(calls) == 1:
            raise ConnectionError("GCS unreachable")

    watcher, said = cluster.replacement()
    watcher.request = flaky
    a = trial("a", "g6.xlarge")
    report(watcher, a, "n1", "g6.xlarge")
    cluster.draining = {"n1": 1}
    cluster.step(watcher, [a])
    assert "the autoscaler request failed (ConnectionError: GCS unreachable); trying again" in said[-1]
    cluster.step(watcher, [a])
    assert len(calls) == 2 and watcher.standing == calls[-1]


def test_placement_replaces_on_the_cheapest_type_but_the_reclaimed_one_and_counts_it_there() -> None:
    placed, _ = make(slots=1)
    t = trial("a", "g6.xlarge")
    assert placed.replace(t, "g6.xlarge").instance_type == "g5.xlarge"  # type: ignore[union-attr]
    # g5's one slot is now the replacement's: a new trial goes elsewhere
    assert placed.choose({"batch_size": 64}).instance_type == "g6.xlarge"  # type: ignore[union-attr]
    updated: list[Any] = []
    t.update_resources = updated.append
    placed.place_again(t)
    assert updated[0].bundles[0]["type:g5.xlarge"] == 0.001 and "a" not in placed.replacements


def test_the_scheduler_pauses_a_trial_that_checkpointed_to_move_and_is_the_searchs_otherwise() -> None:
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    from tuner.cost.replacement import MoveOnNotice

    asha = AsyncHyperBandScheduler(time_attr="epoch", max_t=10, grace_period=1)
    moving = MoveOnNotice(asha)
    assert moving.set_search_properties("val_acc", "max") and moving.metric == "val_acc"
    assert moving.supports_buffered_results == asha.supports_buffered_results
    t = SimpleNamespace(trial_id="a", config={}, status=Trial.RUNNING, evaluated_params={})
    moving.on_trial_add(None, t)
    result = {"epoch": 1, "val_acc": 0.5}
    assert moving.on_trial_result(None, t, result) == TrialScheduler.CONTINUE
    assert moving.on_trial_result(None, t, {**result, "checkpoint_reason": "move"}) == TrialScheduler.PAUSE
    assert moving.on_trial_result(None, t, {**result, "checkpoint_reason": "drain"}) == TrialScheduler.CONTINUE
    # resumed first once paused, whatever the wrapped scheduler would pick (HyperBand resumes only its own pauses)
    controller = SimpleNamespace(get_trials=lambda: [t])
    assert moving.choose_trial_to_run(controller) is None  # still running: being paused
    t.status = Trial.PAUSED
    assert moving.choose_trial_to_run(controller) is t and moving.moving == set()


def test_a_trial_paused_to_move_resumes_where_capacity_was_asked_for() -> None:
    placed, _ = make()
    t = trial("a", "g6.xlarge", status=Trial.PAUSED)
    updated: list[Any] = []
    t.update_resources = updated.append
    placed.replace(t, "g6.xlarge")
    placed.on_step_begin(0, [t])
    assert updated[0].bundles[0]["type:g5.xlarge"] == 0.001 and placed.replacements == {}
    placed.on_step_begin(0, [t])
    assert len(updated) == 1  # placed once


def test_a_replacement_reclaimed_in_its_turn_is_asked_for_again() -> None:
    """The trial moved to the g5 node asked for at its g6 node's notice, and that node gets a notice too: its
    next place is asked for again by the same rule (off g5 now: g6, whose other nodes the cloud still offers
    here), and the request is withdrawn once the trial runs on its third node."""
    cluster = Cluster()
    watcher, said = cluster.replacement()
    a = trial("a", "g6.xlarge")
    report(watcher, a, "n1", "g6.xlarge")
    cluster.draining = {"n1": 1}
    cluster.step(watcher, [a])
    assert cluster.requests[-1][-1]["type:g5.xlarge"] == 0.001

    # moved: paused, placed again where capacity was asked for, and reporting from the g5 node
    assert watcher.placement is not None
    a.update_resources = lambda resources: setattr(a, "placement_group_factory", resources)
    watcher.placement.place_again(a)
    report(watcher, a, "n2", "g5.xlarge")
    cluster.draining = {"n1": 1, "n2": 1}  # the replacement reclaimed in its turn
    cluster.step(watcher, [a])
    own, following = cluster.requests[-1]
    assert own["type:g5.xlarge"] == following["type:g6.xlarge"] == 0.001, cluster.requests[-1]
    assert "trial a's node n2 (g5.xlarge) got a notice: asked the autoscaler for its next place on g6" in said[-1]

    report(watcher, a, "n3", "g6.xlarge")
    cluster.draining = {}
    cluster.step(watcher, [a])
    assert watcher.noticed == {} and cluster.requests[-1] == []
