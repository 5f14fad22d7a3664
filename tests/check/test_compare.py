"""Judging a resume check: divergences found at the right step and metric, causes named from the checkpoint."""

from __future__ import annotations

import math

import torch

from tuner.check.compare import (
    compared_metrics,
    first_divergence,
    judge,
    likely_causes,
    loss_of,
    notice_fit,
    render,
)


def rows(values: list[float], lr: float = 0.1, **extra: float) -> list[dict[str, float]]:
    return [
        {"step": float(i + 1), "val_loss": v, "lr": lr, "epoch_time_s": 0.1 * i, "train_time_s": float(i + 1), **extra}
        for i, v in enumerate(values)
    ]


def test_identical_runs_and_a_redone_step_with_the_same_values_agree() -> None:
    base = rows([0.9, 0.8, 0.7])
    resumed = base[:2] + [base[1], base[2]]  # step 2 redone after a restart: reported twice, the same both times
    assert first_divergence("after a kill", base, resumed, "step", 0.0) is None


def test_the_first_differing_step_and_metric_are_named() -> None:
    base, other = rows([0.9, 0.8, 0.7]), rows([0.9, 0.8, 0.71])
    d = first_divergence("after a notice", base, other, "step", 0.0)
    assert d is not None and (d.step, d.metric, d.expected, d.got) == (3.0, "val_loss", 0.7, 0.71)
    assert first_divergence("after a notice", base, other, "step", 0.02) is None  # within the tolerance


def test_durations_and_platform_keys_are_not_compared() -> None:
    assert compared_metrics(
        {"val_loss": 1.0, "epoch_time_s": 3.0, "train_time_s": 1.0, "preemptions": 1, "step": 2}
    ) == {"val_loss": 1.0, "step": 2.0}


def test_steps_past_the_undisturbed_run_are_not_compared_and_a_missing_step_is() -> None:
    base = rows([0.9, 0.8])
    assert first_divergence("x", base, rows([0.9, 0.8, 0.1]), "step", 0.0) is None
    d = first_divergence("x", base, [{"step": 1.5, "val_loss": 0.85}], "step", 0.0)
    assert d is not None and d.expected is None and d.metric == "step"


def test_nan_equals_nan() -> None:
    assert first_divergence("x", rows([math.nan]), rows([math.nan]), "step", 0.0) is None


def test_causes_name_the_rng_opt_out_and_what_the_checkpoint_lacks() -> None:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    schedule = torch.optim.lr_scheduler.StepLR(opt, 1)
    changing_lr = rows([0.9, 0.8], lr=0.1) + [{"step": 3.0, "val_loss": 0.7, "lr": 0.05}]
    bare = likely_causes({"model": model.state_dict(), "step": 3}, True, changing_lr)
    assert "no optimizer state" in bare[0] and "no scheduler state" in bare[1]
    full = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": schedule.state_dict()}
    assert likely_causes(full, True, changing_lr)[0].startswith("something fit() builds")
    assert likely_causes(full, False, changing_lr)[0].startswith("RNG states are not put back")
    assert likely_causes(None, True, changing_lr)[0].startswith("something fit() builds")  # a framework's directory


def test_judge_and_render_say_identical_or_where_and_why() -> None:
    base = rows([0.9, 0.8])
    same = judge(base, {"after a notice": base, "after a kill": base}, "step", 0.0, None, True)
    assert same.identical and render(same, base, "step", 0.0).startswith("IDENTICAL: the resumed runs reported what")
    off = judge(base, {"after a notice": base, "after a kill": rows([0.9, 0.81])}, "step", 0.0, {"step": 1}, True)
    text = render(off, base, "step", 0.0)
    assert not off.identical and "DIVERGED after a kill: at step 2, val_loss 0.81 resumed vs 0.8 undisturbed" in text
    assert "likely cause: the checkpoint holds no optimizer state" in text


def test_loss_in_the_trainers_units_and_notice_fit() -> None:
    results = [{"step": 100.0, "train_time_s": 10.0, "lost_work_s": 0.5, "recovery_s": 7.0, "preemptions": 1}]
    loss = loss_of(results, "step")
    assert (loss.lost_s, loss.units, loss.recovery_s, loss.preemptions) == (0.5, 5.0, 7.0, 1)
    assert notice_fit(20.0, 0.5) == {"AWS": True, "GCP": True, "Azure": True}
    assert notice_fit(40.0, 0.5) == {"AWS": True, "GCP": False, "Azure": False}
