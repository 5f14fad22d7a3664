"""Replacement capacity at a spot notice: the autoscaler is asked for a noticed trial's next node ahead of the loss.

Without it, a trial on a node that got a notice trains to the deadline, its node goes, Ray notices the
loss, and only then does the pending trial make the autoscaler launch a node: a GPU instance's boot
(about a minute) after a notice that was long enough to boot it (AWS: two minutes). The driver sees a
node drain (``tuner.spot.drain``: any provider's notice, a pod's SIGTERM) and asks for its trials' places
through the public autoscaler SDK (``ray.autoscaler.sdk.request_resources``), on the type the placement
chooses for a new trial with the reclaimed type left out (``tuner.cost.placement``: its room, the price guard
and the capacity gate's caps on on-demand types, one rule); the trial restarts there. It asks ``lead_s`` before
the node's deadline (a node's launch and a margin), or at once when the notice gives less: a node asked for
earlier would be paid while the trial still trains on the old one, and up before it is needed.

A request sets the cluster's whole wanted shape, and Ray's autoscaler fits it onto the nodes there are as
if they were idle, the draining node included. So it names every running trial's bundle (each absorbed
by the node it runs on, the noticed ones' by the draining node) plus one bundle per noticed trial: only
those need nodes that are not there. Several notices combine into one request. It is withdrawn
(``request_resources(bundles=[])``) once every noticed trial runs elsewhere or has ended, and at the end of
the search whatever happens; the autoscaler's ``max_workers`` bounds what it launches, and a trial the
search stopped (budget, scheduler) is no longer asked for. Single-worker trials only: Ray Train sizes a
multi-worker trial's group from the nodes there are, and asking for its workers is not done yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from ray.autoscaler.sdk import request_resources
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from tuner.config.platform import REPLACEMENT_LEAD_S
from tuner.cost.placement import Placement, pinned
from tuner.result_keys import CHECKPOINT_REASON, INSTANCE_TYPE, NODE_ID
from tuner.spot.drain import draining_nodes
from tuner.trial.runtime import MOVE

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.5  # how often the driver looks for draining nodes (a notice's lead is 30-120 s)
WAITING = (Trial.PENDING, Trial.PAUSED)  # a noticed trial between its nodes: restarting, or paused to move


@dataclass
class Noticed:
    """A trial whose node got a notice, and what was asked for it."""

    node_id: str
    bundle: dict[str, float]  # its next place
    asked_s: float


class Replacement(Callback):
    """The driver's side: watches drains, keeps the autoscaler's request in step with the noticed trials."""

    def __init__(
        self,
        bundle: dict[str, float],
        placement: Optional[Placement],
        probe: Callable[[], dict[str, int]] = draining_nodes,
        request: Callable[[list[dict[str, float]]], None] = lambda bundles: request_resources(bundles=bundles),
        lead_s: float = REPLACEMENT_LEAD_S,
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,  # a drain's deadline is wall-clock time
    ) -> None:
        self.bundle, self.placement, self.lead_s = bundle, placement, lead_s
        self.probe, self.request, self.say, self.clock, self.wall = probe, request, say, clock, wall
        self.where: dict[str, tuple[str, str]] = {}  # trial id -> (its node's instance type, node id)
        self.noticed: dict[str, Noticed] = {}
        self.standing: list[dict[str, float]] = []
        self._checked_s = float("-inf")

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks; the hooks stay here
        hooks = ("probe", "request", "say", "clock", "wall", "placement")
        return {k: v for k, v in self.__dict__.items() if k not in hooks}

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        if NODE_ID not in result:
            return
        self.where[trial.trial_id] = (str(result.get(INSTANCE_TYPE, "")), str(result[NODE_ID]))
        noticed = self.noticed.get(trial.trial_id)
        if noticed is not None and noticed.node_id != result[NODE_ID]:
            del self.noticed[trial.trial_id]
            self.say(
                f"replacement: trial {trial.trial_id} runs again, {self.clock() - noticed.asked_s:.1f} s after its "
                "next place was asked for"
            )

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        now = self.clock()
        if now - self._checked_s < CHECK_INTERVAL_S:
            return
        self._checked_s = now
        if not self.noticed and not any(t.status == Trial.RUNNING for t in trials):
            self._ask([])
            return
        try:
            draining = self.probe()
        except Exception as exc:  # the GCS briefly unreachable: look again at the next step
            log.debug("draining-node probe failed: %s", exc)
            return
        live = {t.trial_id: t for t in trials if t.status == Trial.RUNNING or t.status in WAITING}
        for trial_id in [tid for tid in self.noticed if tid not in live]:  # ended or stopped meanwhile
            del self.noticed[trial_id]
        for trial in live.values():
            if trial.status == Trial.RUNNING and trial.trial_id not in self.noticed:
                self._notice(trial, draining, now)
        asking = any(n.bundle for n in self.noticed.values())
        self._ask(self._wanted(live, draining) if asking else [])

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.withdraw()

    def withdraw(self) -> None:
        """No request left standing (the search ended, or the driver is going)."""
        self.noticed.clear()
        self._ask([])

    def _notice(self, trial: Trial, draining: dict[str, int], now: float) -> None:
        instance_type, node_id = self.where.get(trial.trial_id, ("", ""))
        if node_id not in draining:
            return
        left_s = draining[node_id] / 1000.0 - self.wall()  # a deadline of 0: none given, ask at once
        if draining[node_id] and left_s > self.lead_s:
            return  # not yet: looked at again each step
        decision = self.placement.replace(trial, instance_type) if self.placement is not None else None
        if decision is None:
            # An unpinned bundle would be absorbed by the draining node itself (the autoscaler counts it as idle),
            # and would keep that node up: nothing is asked; the trial restarts where Ray finds room.
            self.noticed[trial.trial_id] = Noticed(node_id, {}, now)
            self.say(
                f"replacement: trial {trial.trial_id}'s node {node_id[:12]} got a notice; no other spot type to ask "
                "for (placement off, or none with room): it restarts where Ray finds room"
            )
            return
        self.noticed[trial.trial_id] = Noticed(node_id, pinned(self.bundle, decision), now)
        self.say(
            f"replacement: trial {trial.trial_id}'s node {node_id[:12]} ({instance_type or 'unknown type'}) got a "
            f"notice: asked the autoscaler for its next place on {decision.instance_type}"
            + (f", {left_s:.0f} s before its deadline" if draining[node_id] and left_s > 0 else "")
        )

    def _wanted(self, live: dict[str, Trial], draining: dict[str, int]) -> list[dict[str, float]]:
        """Every running trial's bundles (absorbed where they run) and the noticed trials' replacements. A noticed
        trial whose node has gone is restarting: its own bundles are the replacement's, asked for once."""
        wanted: list[dict[str, float]] = []
        for trial_id, trial in live.items():
            noticed = self.noticed.get(trial_id)
            if trial.status == Trial.RUNNING and (noticed is None or noticed.node_id in draining):
                wanted += trial.placement_group_factory.bundles
            if noticed is not None and noticed.bundle:
                wanted.append(noticed.bundle)
        return wanted

    def _ask(self, bundles: list[dict[str, float]]) -> None:
        if bundles == self.standing:
            return
        try:
            self.request(bundles)
        except Exception as exc:  # never let the request break the search: said, and tried again next step
            self.say(f"replacement: the autoscaler request failed ({type(exc).__name__}: {exc}); trying again")
            return
        self.standing = bundles


class MoveOnNotice(TrialScheduler):
    """The search's own scheduler, plus the driver's side of a move: a trial whose node got a notice, and which
    saw room on another node, checkpoints and reports it (``checkpoint_reason=move``); this pauses it, which
    stops its process on the doomed node without counting a failure, and Tune resumes it from that checkpoint
    where it fits (the placement re-places it first: :meth:`tuner.cost.placement.Placement.on_step_begin`).
    Everything else is the wrapped scheduler's."""

    def __init__(self, inner: TrialScheduler) -> None:
        self.inner = inner
        self.moving: set[str] = set()  # paused here to move; resumed first (HyperBand resumes only its own pauses)

    @property
    def metric(self) -> Any:
        return self.inner.metric

    @property
    def supports_buffered_results(self) -> bool:
        return bool(self.inner.supports_buffered_results)

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec: Any) -> bool:
        return bool(self.inner.set_search_properties(metric, mode, **spec))

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self.inner.on_trial_error(tune_controller, trial)
        self.moving.discard(trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        decision = str(self.inner.on_trial_result(tune_controller, trial, result))
        if result.get(CHECKPOINT_REASON) == MOVE and decision == TrialScheduler.CONTINUE:
            self.moving.add(trial.trial_id)
            return str(TrialScheduler.PAUSE)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        self.inner.on_trial_complete(tune_controller, trial, result)
        self.moving.discard(trial.trial_id)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self.inner.on_trial_remove(tune_controller, trial)
        self.moving.discard(trial.trial_id)

    def choose_trial_to_run(self, tune_controller: Any) -> Optional[Trial]:
        for trial in tune_controller.get_trials():
            if trial.trial_id in self.moving and trial.status == Trial.PAUSED:
                self.moving.discard(trial.trial_id)
                return trial
        return self.inner.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return str(self.inner.debug_string())

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)
