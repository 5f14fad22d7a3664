"""A search ended from outside: the stop file (``run.stop_file``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.run.stop import StopFile


def test_the_stop_file_stops_every_trial_and_the_search_once_it_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = StopFile(str(tmp_path / "STOP"))
    assert not stop("trial-a", {"step": 1}) and not stop.stop_all() and not stop.tripped
    (tmp_path / "STOP").touch()
    assert stop("trial-a", {"step": 2}) and stop("trial-b", {"step": 1}) and stop.stop_all() and stop.tripped
    (tmp_path / "STOP").unlink()
    assert stop.stop_all()  # once stopping, the search stays stopping
    assert capsys.readouterr().out.count("(run.stop_file): stopping the search") == 1
