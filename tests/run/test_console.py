"""The console's progress lines: what a user reads while a search runs."""

from __future__ import annotations

import io
from types import SimpleNamespace

from tests.config.test_config import compose_cfg
from tuner.config import to_settings
from tuner.run.console import ProgressPrinter, error_summary


def lines(*results: dict) -> list[str]:
    stream = io.StringIO()
    printer = ProgressPrinter(to_settings(compose_cfg("+search=mlp")).search, ledger=None, stream=stream)
    trial = SimpleNamespace(trial_id="t1", config={})
    for result in results:
        printer.on_trial_result(0, [], trial, result)
    return stream.getvalue().splitlines()


def test_a_checkpoint_a_spot_notice_asked_for_is_named_whether_or_not_it_came_with_a_report() -> None:
    report = {"epoch": 2, "val_acc": 0.9, "train_time_s": 3.0, "step_hook": 1}
    with_notice, periodic, between = lines(
        {**report, "checkpoint_reason": "drain"},
        {**report, "epoch": 3, "checkpoint_reason": "report"},
        {**report, "checkpoint_only": 1, "checkpoint_reason": "deadline"},
    )
    assert with_notice.endswith("checkpoint (drain)") and "val_acc 0.9" in with_notice
    assert "checkpoint" not in periodic
    assert "checkpoint (deadline) at epoch   2/" in between and "between reports" in between


def test_a_result_reported_again_after_a_restart_is_not_shown_as_training() -> None:
    """A restarted trial sends its newest checkpoint's result again (the driver never got it): the line
    says so, and the next epoch's time counts from the checkpoint, not from the start of the trial."""
    again, trained = lines(
        {"epoch": 24, "val_acc": 0.9, "train_time_s": 30.0, "step_hook": 1, "reported_again": 1},
        {"epoch": 25, "val_acc": 0.91, "train_time_s": 31.5, "step_hook": 1},
    )
    assert "epoch  24/" in again and "val_acc 0.9" in again and "reported again from its checkpoint" in again
    assert "30 s" not in again and trained.endswith("1.5 s")


def test_an_error_is_one_line_the_trainers_own_else_the_exception_ray_raised() -> None:
    ray_text = (
        "Failure # 1 (occurred at 2026-12-07_11-16-53)\n"
        "Traceback (most recent call last):\n"
        '  File "ray/_private/worker.py", line 1, in get\n'
        "ray.exceptions.RuntimeEnvSetupError: Failed to set up runtime environment.\n"
        "OSError: Failed to download runtime_env file package gcs://_ray_pkg_1.zip\n"
    )
    assert error_summary(ray_text) == "OSError: Failed to download runtime_env file package gcs://_ray_pkg_1.zip"
    trainer_text = (
        ray_text + "tuner.trial.trainer.TrainerError: ValueError: bad batch 2 (at mypkg/cases.py:9 in helper)\n"
    )
    assert error_summary(trainer_text) == "ValueError: bad batch 2 (at mypkg/cases.py:9 in helper)"
    assert error_summary("") == "(no error text)"
