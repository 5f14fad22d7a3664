"""The searcher: Optuna's ask-and-tell behind Tune, a concurrency limit, and the reconcile that makes a
restored searcher agree with the restored trial list (the cause of a resumed search that never ended)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import optuna
from ray.tune.experiment import Trial

from tuner.run.search import OptunaSearcher


def space(trial: optuna.Trial) -> dict[str, Any]:
    trial.suggest_float("lr", 1e-3, 1.0, log=True)
    trial.suggest_int("layers", 1, 3)
    return {"fixed": 7}


def searcher(
    max_concurrent: int = 2, metrics: tuple[str, ...] = ("loss",), modes: tuple[str, ...] = ("min",)
) -> OptunaSearcher:
    return OptunaSearcher(space, metrics, modes, optuna.samplers.RandomSampler(seed=0), max_concurrent)


def trial(trial_id: str, status: str, config: dict[str, Any], last: dict[str, Any] | None = None) -> Any:
    return SimpleNamespace(trial_id=trial_id, status=status, config=config, last_result=last)


def states(s: OptunaSearcher) -> list[str]:
    return [t.state.name for t in s.study.trials]


def test_suggestions_are_limited_to_max_concurrent_and_freed_on_completion() -> None:
    s = searcher(max_concurrent=2)
    a, b = s.suggest("a"), s.suggest("b")
    assert a is not None and b is not None and a["fixed"] == 7 and a != b
    assert s.suggest("c") is None  # both slots held
    s.on_trial_complete("a", {"loss": 0.5})
    assert s.suggest("c") is not None
    s.on_trial_complete("b", None, error=True)
    assert states(s) == ["COMPLETE", "FAIL", "RUNNING"]


def test_several_objectives_make_a_multi_objective_study() -> None:
    s = searcher(metrics=("val_acc", "cost_usd"), modes=("max", "min"))
    s.suggest("a")
    s.on_trial_complete("a", {"val_acc": 0.9, "cost_usd": 0.01})
    assert s.study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert s.study.trials[0].values == [0.9, 0.01]


def test_the_searcher_saves_and_restores_with_a_sampler_that_holds_a_lock(tmp_path) -> None:
    """Optuna 5's NSGA-II sampler holds a thread lock, which plain pickle refuses."""
    s = OptunaSearcher(space, ("val_acc", "cost_usd"), ("max", "min"), optuna.samplers.NSGAIISampler(seed=0), 2)
    s.suggest("a")
    s.on_trial_complete("a", {"val_acc": 0.9, "cost_usd": 0.01})
    s.suggest("b")
    s.save(str(tmp_path / "searcher.pkl"))
    restored = OptunaSearcher(space, ("val_acc", "cost_usd"), ("max", "min"), optuna.samplers.RandomSampler(), 2)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert isinstance(restored.study.sampler, optuna.samplers.NSGAIISampler) and list(restored.live) == ["b"]
    assert restored.suggest("c") is not None and states(restored) == ["COMPLETE", "RUNNING", "RUNNING"]


def test_a_multi_objective_trial_stopped_early_is_pruned_not_a_cheap_point_on_the_front() -> None:
    s = OptunaSearcher(
        space,
        ["val_acc", "cost_usd"],
        ["max", "min"],
        optuna.samplers.RandomSampler(seed=0),
        3,
        time_attr="epoch",
        max_t=10,
    )
    for trial_id in "abc":
        s.suggest(trial_id)
    s.on_trial_complete("a", {"val_acc": 0.9, "cost_usd": 0.01, "epoch": 10})
    s.on_trial_complete("b", {"val_acc": 0.5, "cost_usd": 0.001, "epoch": 3})  # ASHA stopped it at epoch 3
    s.on_trial_complete("c", {"val_acc": float("nan"), "cost_usd": 0.01, "epoch": 10})
    assert states(s) == ["COMPLETE", "PRUNED", "PRUNED"]
    single = OptunaSearcher(
        space, ["loss"], ["min"], optuna.samplers.RandomSampler(seed=0), 1, time_attr="epoch", max_t=10
    )
    single.suggest("a")
    single.on_trial_complete("a", {"loss": 0.5, "epoch": 3})  # one objective: ASHA's early stop is the usual outcome
    assert states(single) == ["COMPLETE"]


def test_reconcile_frees_a_slot_held_by_a_trial_no_list_knows() -> None:
    """The hang that was seen: the saved limiter named a trial the restored trial list lacks."""
    s = searcher(max_concurrent=1)
    s.suggest("ghost")
    assert s.suggest("next") is None
    s.reconcile([])
    assert s.suggest("next") is not None and states(s)[0] == "FAIL"


def test_reconcile_tells_optuna_what_finished_and_holds_slots_for_what_resumes() -> None:
    s = searcher(max_concurrent=2)
    known = s.suggest("known")
    s.reconcile(
        [
            trial("known", Trial.TERMINATED, known, {"loss": 0.3}),  # finished after the searcher's state was saved
            trial("lost", Trial.TERMINATED, {"lr": 0.01, "layers": 2, "fixed": 7}, {"loss": 0.2}),  # unknown to Optuna
            trial("resuming", Trial.RUNNING, {"lr": 0.1, "layers": 1, "fixed": 7}),  # unknown and unfinished
        ]
    )
    done = {t.params["lr"]: t.value for t in s.study.trials if t.state.name == "COMPLETE"}
    assert done == {known["lr"]: 0.3, 0.01: 0.2}
    assert set(s.live) == {"resuming"} and s.live["resuming"].params == {"lr": 0.1, "layers": 1}
    assert s.suggest("new") is not None and s.suggest("full") is None  # 2 slots: resuming + new
    s.on_trial_complete("resuming", {"loss": 0.1})
    assert 0.1 in {t.value for t in s.study.trials if t.state.name == "COMPLETE"}


def test_reconcile_is_idempotent_and_a_completion_arrives_once() -> None:
    s = searcher()
    config = s.suggest("a")
    finished = [trial("a", Trial.TERMINATED, config, {"loss": 0.4})]
    s.reconcile(finished)
    s.reconcile(finished)
    s.on_trial_complete("a", {"loss": 0.4})  # Tune may still tell it: no second trial
    assert states(s) == ["COMPLETE"]
