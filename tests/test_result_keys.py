"""The keys of a trial's result have one home: no module of the package spells one as a bare string."""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

from tuner import result_keys

PACKAGE = Path(result_keys.__file__).parent
# Node labels' names (zone, region, ...) are also catalog columns and label values; the planner's table of a simulated
# campaign (tuner/plan) has columns of its own that happen to share names with results.
SHARED_NAMES = set(result_keys.LOCATION) - {result_keys.ATTEMPT_STARTED_S}
OWN_TABLES = {PACKAGE / "plan"}


def result_key_values() -> set[str]:
    return {v for k, v in vars(result_keys).items() if k.isupper() and isinstance(v, str)} - SHARED_NAMES


def bare_keys(path: Path, keys: set[str]) -> list[str]:
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return [
        f"{path}:{t.start[0]}: {t.string}"
        for t in tokens
        if t.type == tokenize.STRING and t.string[:1] in "\"'" and t.string[1:-1] in keys
    ]


def test_no_result_key_is_spelled_outside_its_module() -> None:
    keys = result_key_values()
    assert {"train_time_s", "preemptions", "lost_work_s", "cost_usd", "checkpoint_only"} <= keys
    found = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != Path(result_keys.__file__) and not any(d in path.parents for d in OWN_TABLES)
        for hit in bare_keys(path, keys)
    ]
    assert not found, "use tuner.result_keys' constants:\n" + "\n".join(found)


def test_the_check_finds_a_bare_key_and_not_a_constant(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('seconds = result["train_time_s"]\nsame = result[TRAIN_TIME_S]  # "train_time_s" in a comment\n')
    assert bare_keys(module, result_key_values()) == [f'{module}:1: "train_time_s"']
