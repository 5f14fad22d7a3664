"""``python -m tuner.plan [markets=[aws-v100]] [profile.trials=128] [starts=48]``: replay a campaign over
real spot traces."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from tuner import config as config_mod
from tuner.cli import command
from tuner.plan.planner import run_plan


@hydra.main(version_base="1.3", config_path="../../conf", config_name="plan")
def main(cfg: DictConfig) -> None:
    command(run_plan, cfg)


config_mod.register()

if __name__ == "__main__":
    main()
