"""Node chaos on a local multi-node Ray cluster: nodes taken away at random, some after a spot notice.

:class:`NodeChaos` gives each worker node of a ``ray.cluster_utils.Cluster`` its own
metadata server and a real agent (``python -m tuner.spot.agent``) and preempts nodes
with or without notice; :func:`node_chaos` runs a search undisturbed and under chaos
and judges whether anything was lost.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tests.tooling.metadata import MetadataServer
from tuner.check.runs import Results
from tuner.config import Config
from tuner.result_keys import CHECKPOINT_ONLY, CHECKPOINT_REASON, LOST_WORK_S, PREEMPTIONS, WALL_S

ResultRecorder = Results  # every result the driver receives, in order: what a fault-injection run is judged on
AGENT_START_TIMEOUT_S = 60.0
POLL_S = 0.05  # how often the injector looks at the results it has seen


def nodes_in_use(resource: str = "CPU") -> dict[str, dict[str, Any]]:
    """Live nodes with some of ``resource`` taken right now, by node id (needs a connected driver).

    What the GCS last heard from each raylet (about a second old): a trial's latest result can be
    much older, and its node idle since, when the trial was restarted elsewhere.
    """
    import ray

    from tuner import _ray

    free = _ray.free_resources_per_node()
    return {
        n["NodeID"]: n
        for n in ray.nodes()
        if n["Alive"] and n["Resources"].get(resource, 0) > free.get(n["NodeID"], {}).get(resource, 0)
    }


@dataclass
class ChaosNode:
    node: Any  # ray._private.node.Node
    metadata: MetadataServer
    agent: subprocess.Popen[str]
    output: str = ""  # what the agent logged, once stopped

    @property
    def node_id(self) -> str:
        return str(self.node.node_id)


@dataclass
class NodeChaos:
    """Worker nodes of a ``ray.cluster_utils.Cluster``, each with a metadata server and agent."""

    cluster: Any
    provider: str = "aws"
    agent_interval_s: float = 0.2
    nodes: dict[str, ChaosNode] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)  # what was done, when

    def add_node(self, **node_args: Any) -> ChaosNode:
        node = self.cluster.add_node(**node_args)
        self.cluster.wait_for_nodes()
        metadata = MetadataServer(self.provider).start()
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuner.spot.agent",
                "--provider",
                self.provider,
                "--endpoint",
                metadata.url,
                "--address",
                self.cluster.address,
                "--node-id",
                node.node_id,
                "--interval-s",
                str(self.agent_interval_s),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.nodes[node.node_id] = ChaosNode(node, metadata, agent)
        return self.nodes[node.node_id]

    def _remove(self, node_id: str, what: str) -> None:
        chaos_node = self.nodes.pop(node_id)
        self.cluster.remove_node(chaos_node.node, allow_graceful=False)
        removed_at_s = time.time()  # before the agent is stopped, which can take seconds
        self._stop(chaos_node)
        self.log.append({"event": what, "node_id": node_id, "time_s": removed_at_s, "agent_output": chaos_node.output})

    @staticmethod
    def _wait_until_watched(chaos_node: ChaosNode) -> None:
        """Block until the node's agent has polled its metadata once. On a real instance the agent starts
        at boot, long before any notice; here a loaded machine can take seconds to start it."""
        deadline = time.monotonic() + AGENT_START_TIMEOUT_S
        while not chaos_node.metadata.requests:
            if chaos_node.agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent of node {chaos_node.node_id} is not watching its metadata")
            time.sleep(0.05)

    def preempt(self, node_id: str, notice_s: float, saved: Callable[[float], bool] | None = None) -> None:
        """Give the node an interruption notice, then take it away at the deadline, or as soon as ``saved(notice
        time)`` says its trial has taken its deadline checkpoint (it only holds still after it), if given. Blocks."""
        chaos_node = self.nodes[node_id]
        self._wait_until_watched(chaos_node)
        noticed_s = time.time()
        chaos_node.metadata.terminate_at = noticed_s + notice_s
        self.log.append({"event": "notice", "node_id": node_id, "time_s": noticed_s})
        while time.time() < noticed_s + notice_s and not (saved and saved(noticed_s)):
            time.sleep(POLL_S)
        self._remove(node_id, "preempted")

    def kill(self, node_id: str) -> None:
        """Take the node away with no notice."""
        self._remove(node_id, "killed")

    @staticmethod
    def _stop(chaos_node: ChaosNode) -> None:
        chaos_node.agent.terminate()
        try:
            chaos_node.output = chaos_node.agent.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            chaos_node.agent.kill()
        chaos_node.metadata.stop()

    def close(self) -> None:
        for node_id in list(self.nodes):
            self._remove(node_id, "removed")


def _final_results(results: list[dict[str, Any]], epochs: int) -> dict[str, dict[str, Any]]:
    """Each trial's last full-epoch result, keyed by its hyperparameters (trial ids differ run to run)."""
    final = {}
    for r in results:
        if not r.get(CHECKPOINT_ONLY) and r.get("epoch") == epochs:
            final[json.dumps(r["config"], sort_keys=True)] = r
    return final


REMOVALS = ("preempted", "killed")  # log events that take a node away during a run ("removed": after it)


def interruptions_by_trial(log: list[dict[str, Any]], results: list[dict[str, Any]], epochs: int) -> dict[str, int]:
    """How many node removals interrupted each trial: its last result before the removal came from
    that node and its final result came after it. Each must show up as one preemption."""
    counts: dict[str, int] = {}
    finished_at = {r["trial_id"]: r[WALL_S] for r in results if not r.get(CHECKPOINT_ONLY) and r.get("epoch") == epochs}
    for event in (e for e in log if e["event"] in REMOVALS):
        before: dict[str, dict[str, Any]] = {}
        for r in results:
            if r[WALL_S] < event["time_s"]:
                before[r["trial_id"]] = r
        for trial_id, r in before.items():
            if r["node_id"] == event["node_id"] and finished_at.get(trial_id, float("inf")) > event["time_s"]:
                counts[trial_id] = counts.get(trial_id, 0) + 1
    return counts


def timeline(log: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Where each trial ran and when each node went, in seconds from the first result: what explains
    a mismatch between removals and counted preemptions."""
    origin = min((r[WALL_S] for r in results), default=0.0)
    placements: dict[str, list[list[Any]]] = {}
    for r in results:
        runs_on = placements.setdefault(r["trial_id"], [])
        if not runs_on or runs_on[-1][0] != r["node_id"][:8]:
            runs_on.append([r["node_id"][:8], round(r[WALL_S] - origin, 1), r.get("epoch", 0)])
    removals = [[e["event"], e["node_id"][:8], round(e["time_s"] - origin, 1)] for e in log if e["event"] in REMOVALS]
    return {"placements": placements, "removals": removals}


def deadline_saved(recorder: ResultRecorder, node_id: str) -> Callable[[float], bool]:
    """Whether a trial on ``node_id`` has reported its deadline checkpoint since a notice (given its time)."""

    def saved(noticed_s: float) -> bool:
        return any(
            r.get(CHECKPOINT_ONLY)
            and r.get(CHECKPOINT_REASON) == "deadline"
            and r.get("node_id") == node_id
            and r.get(WALL_S, 0.0) >= noticed_s
            for r in list(recorder.results)
        )

    return saved


def _latest(recorder: ResultRecorder) -> dict[str, dict[str, Any]]:
    return {r["trial_id"]: r for r in list(recorder.results) if not r.get(CHECKPOINT_ONLY)}


def _next_victim(
    recorder: ResultRecorder, done: threading.Event, rng: random.Random, nodes: set[str], epochs: int, span: int
) -> str | None:
    """The node to take away next: a random trial in the first half of its epochs on one of ``nodes``, once it
    reports an epoch 1 to ``span`` ahead (still in that half: half its epochs left while the node goes);
    None once the search is over."""
    while not done.is_set():
        live = sorted(
            (r for r in _latest(recorder).values() if r["node_id"] in nodes and r.get("epoch", 0) < epochs // 2),
            key=lambda r: r["trial_id"],
        )
        if not live:
            done.wait(POLL_S)
            continue
        trial = rng.choice(live)
        at = min(trial.get("epoch", 0) + rng.randint(1, span), epochs // 2)
        while not done.is_set():
            now = _latest(recorder)[trial["trial_id"]]
            if now.get("epoch", 0) >= at:
                if now["node_id"] in nodes:  # still where it reported: it is training there now
                    return str(now["node_id"])
                break  # it moved (another removal): draw again
            done.wait(POLL_S)
    return None


def node_chaos(
    cluster: Any,
    cfg: Config,
    kills: int,
    seed: int = 0,
    notice_fraction: float = 0.5,
    notice_s: float = 4.0,
    span_epochs: int = 2,
    workers: int = 3,
) -> dict[str, Any]:
    """Run ``cfg`` twice on ``cluster``: undisturbed, then with ``kills`` worker nodes taken away at random
    (fixed seed; some with a spot notice first), each replaced. Every search runs through the real driver.

    Each kill is placed by training progress, never by the clock: a random trial in the first half of its
    epochs, and the node it is on when it reports a random epoch 1 to ``span_epochs`` ahead, so that every
    kill comes, and lands on a running trial, at any machine speed.

    Returns the figures of the chaos run and ``data_lost``: trials that did not finish, or finished with
    other final metrics than the undisturbed run. Requires the search's trials to come from seeded
    random sampling (num_samples <= searcher.n_startup_trials) so that both runs train the same configs.
    """
    from tuner.run.driver import execute

    assert cfg.search is not None and cfg.search.tune.num_samples <= cfg.search.searcher.n_startup_trials
    epochs = cfg.search.max_t
    rng = random.Random(seed)
    runs: dict[str, ResultRecorder] = {}
    chaos = NodeChaos(cluster)
    events: list[str] = []
    removals: list[dict[str, Any]] = []
    for name in ("undisturbed", "chaos"):
        for _ in range(workers + (kills if name == "chaos" else 0)):  # replacements wait as spare nodes
            chaos.add_node(num_cpus=1)
        recorder = runs[name] = ResultRecorder()
        done = threading.Event()

        def inject(recorder: ResultRecorder = recorder, done: threading.Event = done) -> None:
            while len(events) < kills:
                victim = _next_victim(recorder, done, rng, set(chaos.nodes), epochs, span_epochs)
                if victim is None:
                    return
                if rng.random() < notice_fraction:
                    events.append("notice")
                    chaos.preempt(victim, notice_s, deadline_saved(recorder, victim))
                else:
                    events.append("kill")
                    chaos.kill(victim)

        run_name = f"{cfg.name}-{name}"
        run_cfg = replace(
            cfg,
            name=run_name,
            cluster=replace(cfg.cluster, address=cluster.address),
            tracking=replace(cfg.tracking, experiment_name=run_name),
        )
        injector = threading.Thread(target=inject, daemon=True) if name == "chaos" else None
        if injector:
            injector.start()
        status = execute(run_cfg, observers=[recorder])
        done.set()
        if injector:
            injector.join()
            removals = list(chaos.log)
        chaos.close()
        if status != 0:
            raise RuntimeError(f"{name} run exited with status {status}")
    baseline = _final_results(runs["undisturbed"].results, epochs)
    disturbed = _final_results(runs["chaos"].results, epochs)
    keys = ("val_acc", "val_loss", "train_loss")
    lost = [k for k, r in baseline.items() if k not in disturbed or any(disturbed[k][m] != r[m] for m in keys)]
    last = {r["trial_id"]: r for r in runs["chaos"].results}
    interrupted = interruptions_by_trial(removals, runs["chaos"].results, epochs)
    seen = {trial_id: int(r.get(PREEMPTIONS, 0)) for trial_id, r in last.items()}
    return {
        "kills": len(events),
        "notices": events.count("notice"),
        "trials": cfg.search.tune.num_samples,
        "trials_finished": len(disturbed),
        "trials_interrupted": sum(interrupted.values()),
        "preemptions_seen_by_trials": sum(seen.values()),
        # trial id: [removals that interrupted it, preemptions it counted]; a mismatch names its trial
        "by_trial": {trial_id: [interrupted.get(trial_id, 0), seen[trial_id]] for trial_id in sorted(seen)},
        **timeline(removals, runs["chaos"].results),
        LOST_WORK_S: round(sum(r.get(LOST_WORK_S, 0.0) for r in last.values()), 2),
        "data_lost": len(lost),
    }
