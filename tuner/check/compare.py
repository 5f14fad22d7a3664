"""Judging a resume check: the disturbed runs' reports against the undisturbed run's, step by step.

Pure functions over the runs' results, so that every verdict and every named cause is unit-tested
without a cluster. A run's reports are its results without the checkpoint-only ones; a step reported
twice (work redone after a restart) is compared both times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from tuner.result_keys import CHECKPOINT_ONLY, LOST_WORK_S, PREEMPTIONS, RECOVERY_S, STEP_HOOK, TRAIN_TIME_S
from tuner.trial.runtime import user_metrics

# A cloud's notice lead time: what a checkpoint write (plus the drain poll) must fit in.
NOTICE_LEAD_S = {"AWS": 120.0, "GCP": 30.0, "Azure": 30.0}
DURATION_SUFFIXES = ("_s", "_sec", "_secs", "_seconds", "_time", "_ms")  # metrics that measure the clock


def compared_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """What the trainer reported, less what measures the clock (an epoch's seconds differs run to run)."""
    return {k: v for k, v in user_metrics(result).items() if not k.lower().endswith(DURATION_SUFFIXES)}


def reports(results: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in results if not r.get(CHECKPOINT_ONLY)]


@dataclass(frozen=True)
class Divergence:
    """The first report of a resumed run that differs from the undisturbed run's at the same step."""

    run: str
    step: float
    metric: str
    expected: Optional[float]  # the undisturbed run's value (None: it never reported this step or metric)
    got: Optional[float]


def first_divergence(
    run: str, base: Sequence[Mapping[str, Any]], other: Sequence[Mapping[str, Any]], time_attr: str, tolerance: float
) -> Optional[Divergence]:
    """The first step (in the order reported) at which ``other`` differs from ``base`` beyond ``tolerance``
    (relative), over the steps both reached; None when identical."""
    expected = {float(r[time_attr]): compared_metrics(r) for r in reports(base) if time_attr in r}
    last = max(expected, default=0.0)
    for r in reports(other):
        step = float(r.get(time_attr, math.nan))
        if not step <= last:
            continue  # past where the undisturbed run stopped (or no step): nothing to compare with
        want = expected.get(step)
        got = compared_metrics(r)
        if want is None:
            return Divergence(run, step, time_attr, None, step)  # a step the undisturbed run never reported
        for metric in sorted(set(want) | set(got)):
            a, b = want.get(metric), got.get(metric)
            if a is None or b is None or not math.isclose(a, b, rel_tol=tolerance, abs_tol=0.0):
                if a is not None and b is not None and math.isnan(a) and math.isnan(b):
                    continue
                return Divergence(run, step, metric, a, b)
    return None


def _find(state: Any, keys: set[str], depth: int = 3) -> bool:
    """Whether a (nested) mapping in ``state`` has all of ``keys``: how an optimizer's or a scheduler's
    ``state_dict()`` looks, whatever the trainer named it."""
    if not isinstance(state, Mapping) or depth < 0:
        return False
    return keys <= set(state) or any(_find(v, keys, depth - 1) for v in state.values())


def likely_causes(
    state: Any, rng_restored: bool, base: Sequence[Mapping[str, Any]], lr_metric: str = "lr"
) -> list[str]:
    """What a divergence most likely comes from, judged from the checkpoint's state (a state dict; None for a
    directory a framework wrote), the RNG setting and the undisturbed run's reports; most likely first."""
    causes = []
    if not rng_restored:
        causes.append(
            "RNG states are not put back on resume (checkpoint.rng=false, or load(rng=False)): dropout "
            "masks and shuffles after the restart differ; drop the opt-out, or save and restore them yourself "
            "(session.rng_state / set_rng_state)"
        )
    if isinstance(state, Mapping):
        if not _find(state, {"state", "param_groups"}):
            causes.append(
                "the checkpoint holds no optimizer state (no state_dict with param_groups): save "
                "opt.state_dict() in the state and load it back, or momentum and Adam's moments restart at zero"
            )
        rates = {r.get(lr_metric) for r in reports(base) if lr_metric in r}
        if len(rates) > 1 and not _find(state, {"last_epoch"}):
            causes.append(
                f"the learning rate changes over steps ({lr_metric!r} reported) but the checkpoint holds no "
                "scheduler state (no state_dict with last_epoch): save scheduler.state_dict() and load it back"
            )
    causes.append(
        "something fit() builds before its loop is not in the checkpoint, or not loaded back: compare what "
        "state() saves with what fit() sets up (model, optimizer, scheduler, data order, counters)"
    )
    return causes


@dataclass
class Loss:
    """What one fault cost the resumed run, in seconds of training and in the trainer's own units."""

    lost_s: float
    units: float
    recovery_s: float
    preemptions: int


def loss_of(results: Sequence[Mapping[str, Any]], time_attr: str) -> Loss:
    """From the run's last report: the work redone (worker-seconds, and in ``time_attr`` units at the run's
    mean speed), recovery time and preemptions counted."""
    rows = reports(results)
    final = rows[-1] if rows else {}
    trained_s, done = float(final.get(TRAIN_TIME_S, 0.0)), float(final.get(time_attr, 0.0))
    lost_s = float(final.get(LOST_WORK_S, 0.0))
    per_unit_s = trained_s / done if done else math.inf
    return Loss(
        lost_s,
        lost_s / per_unit_s if per_unit_s else 0.0,
        float(final.get(RECOVERY_S, 0.0)),
        int(final.get(PREEMPTIONS, 0)),
    )


def notice_fit(write_s: float, poll_s: float) -> dict[str, bool]:
    """Whether a checkpoint written in ``write_s`` (after a drain poll of ``poll_s``) fits each cloud's notice."""
    return {cloud: write_s + poll_s < lead_s for cloud, lead_s in NOTICE_LEAD_S.items()}


def steps_hooked(results: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the trainer calls ``session.step`` (or ``should_checkpoint``): else a notice waits for a report."""
    return any(r.get(STEP_HOOK) for r in results)


@dataclass
class Verdict:
    identical: bool
    divergences: list[Divergence] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)


def _value(v: Optional[float]) -> str:
    return "nothing" if v is None else f"{v:.6g}"


def judge(
    base: Sequence[Mapping[str, Any]],
    resumed: Mapping[str, Sequence[Mapping[str, Any]]],
    time_attr: str,
    tolerance: float,
    state: Any,
    rng_restored: bool,
) -> Verdict:
    """Compare each resumed run (by name) with the undisturbed one; on a divergence, name the likely causes."""
    found = [
        d for name, results in resumed.items() if (d := first_divergence(name, base, results, time_attr, tolerance))
    ]
    if not found:
        return Verdict(True)
    return Verdict(False, found, likely_causes(state, rng_restored, base))


def render(verdict: Verdict, base: Sequence[Mapping[str, Any]], time_attr: str, tolerance: float) -> str:
    """The verdict in lines a user reads: identical, or where each resumed run first differed and why."""
    rows = reports(base)
    if verdict.identical:
        metrics = sorted({k for r in rows for k in compared_metrics(r)})
        return (
            f"IDENTICAL: the resumed runs reported what the undisturbed run did, {', '.join(metrics)} at each of its "
            f"{len(rows)} reports{f' (within a relative {tolerance:g})' if tolerance else ''}"
        )
    lines = []
    for d in verdict.divergences:
        lines.append(
            f"DIVERGED {d.run}: at {time_attr} {d.step:g}, {d.metric} {_value(d.got)} resumed vs "
            f"{_value(d.expected)} undisturbed"
        )
    lines += [f"  likely cause: {verdict.causes[0]}", *(f"  or: {c}" for c in verdict.causes[1:])]
    return "\n".join(lines)
