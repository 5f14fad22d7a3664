"""``python -m tuner.run +search=NAME [cluster=...] [storage=...] [tracking=...] [search/scheduler=...]``.

Composes the config (Hydra), checks it, and hands it to the driver. Bad input exits with
status 2 and one line that says what to fix; a user's own searches are found with
``--config-dir DIR`` (a folder with ``search/NAME.yaml``).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from tuner import config as config_mod
from tuner.cli import available_searches, command, fail


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from tuner.run.driver import execute

    if OmegaConf.is_missing(cfg.search, "name"):
        fail(f"no search chosen: add +search=NAME, one of: {', '.join(available_searches())}")
    sys.exit(command(execute, cfg))


config_mod.register()

if __name__ == "__main__":
    main()
