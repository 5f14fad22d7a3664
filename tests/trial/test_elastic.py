"""When a failed multi-worker run is started again by its trial (a lost node) and when the failure goes to Tune."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from tuner.trial import elastic


class Store:
    def __init__(self, beat: Optional[dict[str, Any]] = None, error: Optional[Exception] = None) -> None:
        self.beat, self.error = beat, error

    def read(self) -> Optional[dict[str, Any]]:
        if self.error:
            raise self.error
        return self.beat


def beat(wall_s: float) -> dict[str, Any]:
    return {"node_id": "a", "nodes": ["a", "b"], "wall_s": wall_s, "error": False}


@pytest.fixture
def lost_b(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(elastic, "node_lost", lambda node: node == "b")


def test_a_run_whose_attempt_lost_a_node_is_started_again(lost_b: None) -> None:
    assert elastic._lost_a_node(Store(beat(100.0)), since_s=50.0)  # type: ignore[arg-type]


def test_an_attempt_that_failed_before_its_first_heartbeat_goes_to_tune(lost_b: None) -> None:
    """The heartbeat is the previous run's (it lost node b): this run failed loading the trainer or checkpoint."""
    assert not elastic._lost_a_node(Store(beat(40.0)), since_s=50.0)  # type: ignore[arg-type]
    assert not elastic._lost_a_node(Store(None), since_s=50.0)  # type: ignore[arg-type]


def test_an_unreadable_heartbeat_counts_the_failure(lost_b: None) -> None:
    assert not elastic._lost_a_node(Store(error=TimeoutError("store")), since_s=50.0)  # type: ignore[arg-type]


def test_every_node_still_there_is_an_application_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(elastic, "node_lost", lambda node: False)
    monkeypatch.setattr(elastic, "NODE_LOSS_WAIT_S", 0.0)
    assert not elastic._lost_a_node(Store(beat(100.0)), since_s=50.0)  # type: ignore[arg-type]
