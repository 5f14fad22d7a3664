"""The README and the pages in docs/ stay true: their links point into the repository, every command line of
ours they show composes and validates, and every config key they name exists (bar the bad-input table's
deliberate typos)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tuner import config as config_mod
from tuner.cli import CONF_DIR
from tuner.config import to_settings
from tuner.trial.trainer import load, settings_for

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
PAGES = {path: path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
EVERYTHING = "\n".join(PAGES.values())
config_mod.register()

GROUPS = (
    "search",
    "cluster",
    "storage",
    "tracking",
    "run",
    "checkpoint",
    "pricing",
    "cost",
    "budget",
    "price_guard",
    "liveness",
    "fallback",
)
KEY = re.compile(rf"^\+?((?:{'|'.join(GROUPS)})\.[A-Za-z_][\w.]*)(?:=.*)?$")


def commands(module: str) -> list[list[str]]:
    """Every ``python -m MODULE ...`` line in the code blocks of the README and docs/, continuation lines joined,
    comments cut."""
    blocks = re.findall(r"```bash\n(.*?)```", EVERYTHING, flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    found = []
    for line in lines:
        at = line.find(f"python -m {module} ")
        if at < 0 and not line.rstrip().endswith(f"python -m {module}"):
            continue
        words = shlex.split(line[max(at, 0) :], comments=True)
        found.append(words[3:] if words[:3] == ["python", "-m", module] else words)
    return found


def compose_cfg(config_name: str, overrides: list[str], config_dir: str | None = None) -> Any:
    extra = [f"hydra.searchpath=[file://{REPO / config_dir}]"] if config_dir else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=[*overrides, *extra])


def split_config_dir(args: list[str]) -> tuple[str | None, list[str]]:
    if "--config-dir" in args:
        at = args.index("--config-dir")
        return args[at + 1], args[:at] + args[at + 2 :]
    return None, args


RUN_COMMANDS = commands("tuner.run")


def test_the_readme_starts_with_the_two_commands() -> None:
    first = re.search(r"```bash\n(.*?)```", README, flags=re.S)
    assert first and [line.split("#")[0].strip() for line in first.group(1).splitlines()] == ["make run", "make test"]


@pytest.mark.parametrize("page", sorted(PAGES), ids=lambda path: path.name)
def test_links_point_into_the_repository(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", PAGES[page]):
        if not target.startswith(("http://", "https://")):
            resolved = (page.parent / target).resolve()
            assert resolved.exists(), target
            assert REPO in (resolved, *resolved.parents), target  # users have the repository, nothing beside it


@pytest.mark.parametrize("args", RUN_COMMANDS, ids=[" ".join(a) or "(none)" for a in RUN_COMMANDS])
def test_every_run_command_composes_and_validates(args: list[str]) -> None:
    config_dir, overrides = split_config_dir(args)
    if config_dir == "conf":  # a user's own repository: stands for examples/conf here
        config_dir, overrides = "examples/conf", ["+search=regression" if o == "+search=mine" else o for o in overrides]
    settings = to_settings(compose_cfg("config", overrides, config_dir))
    assert settings.search is not None


CHECK_COMMANDS = commands("tuner.check")


@pytest.mark.parametrize("args", CHECK_COMMANDS, ids=[" ".join(a) for a in CHECK_COMMANDS])
def test_every_check_command_composes_and_validates(args: list[str]) -> None:
    from tuner.check.__main__ import hydra_argv

    config_dir, overrides = split_config_dir(hydra_argv(args))
    if config_dir == "conf":
        config_dir, overrides = "examples/conf", ["+search=regression" if o == "+search=mine" else o for o in overrides]
    settings = to_settings(compose_cfg("check", overrides, config_dir))
    assert settings.search is not None and settings.tracking.enabled is False


@pytest.mark.parametrize("module,config_name", [("tuner.plan", "plan"), ("tuner.report", "report")])
def test_every_plan_and_report_command_composes(module: str, config_name: str) -> None:
    found = commands(module)
    assert found
    for args in found:
        compose_cfg(config_name, args)


def test_every_key_the_readme_and_docs_name_exists() -> None:
    # that table names typos on purpose
    prose = re.sub(r"Bad input exits.*?Each row is a test", "", EVERYTHING, flags=re.S)
    tokens = {t for t in re.findall(r"`([^`\s]+)`", prose)}
    for block in re.findall(r"```bash\n(.*?)```", EVERYTHING, flags=re.S):
        tokens |= set(block.split())
    keys = sorted({m.group(1).rstrip(".") for t in tokens if (m := KEY.match(t))})
    assert len(keys) > 30, keys
    searches = {
        name: compose_cfg("config", [f"+search={name}"], directory)
        for name, directory in [("resnet", None), ("regression", "examples/conf")]
    }
    for key in keys:
        if key.startswith("search.workload."):  # the trainer's own settings: the built-in's are typed
            resnet = to_settings(searches["resnet"]).search
            typed = settings_for(load(resnet.trainer), resnet.workload)
            regression = searches["regression"].search.workload
            path = key.removeprefix("search.workload.").split(".")
            assert path[0] in regression or _has(typed, path), key
            continue
        node = key.split(".")
        parent = OmegaConf.select(searches["resnet"], ".".join(node[:-1]))
        assert parent is not None and node[-1] in parent, key


def _has(obj: Any, path: list[str]) -> bool:
    for name in path:
        if not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return True
