"""``python -m tuner.check [--budget S] [--tolerance X] [--config-dir DIR] +search=NAME [overrides]``.

The same Hydra arguments as ``python -m tuner.run``; ``--budget`` and ``--tolerance`` are short for
``check.budget_s=`` and ``check.tolerance=``. Exit 0 when the resumed runs are identical, 1 when they
are not (or a fault could not be placed), 2 on bad input.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from tuner import config as config_mod
from tuner.cli import search_command

FLAGS = {"--budget": "check.budget_s", "--tolerance": "check.tolerance"}


def hydra_argv(argv: list[str]) -> list[str]:
    """``--budget 60`` / ``--budget=60`` as the override ``check.budget_s=60`` (and ``--tolerance`` likewise)."""
    out, args = [], iter(argv)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in FLAGS:
            out.append(f"{FLAGS[flag]}={value if eq else next(args, '')}")
        else:
            out.append(arg)
    return out


@hydra.main(version_base="1.3", config_path="../../conf", config_name="check")
def main(cfg: DictConfig) -> None:
    from tuner.check.runs import run_check  # once the config composed: a typo is one line in ~2 s, not 3

    search_command(run_check, cfg)


config_mod.register()

if __name__ == "__main__":
    sys.argv = [sys.argv[0], *hydra_argv(sys.argv[1:])]
    main()
