"""``python -m tuner.run +search=NAME [cluster=...] [storage=...] [tracking=...] [search/scheduler=...]``.

Composes the config (Hydra), checks it, and hands it to the driver. Bad input exits with
status 2 and one line that says what to fix; a user's own searches are found with
``--config-dir DIR`` (a folder with ``search/NAME.yaml``).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from tuner import config as config_mod
from tuner.cli import search_command


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from tuner.run.driver import execute  # once the config composed: a typo is one line in ~2 s, not 3

    search_command(execute, cfg)


config_mod.register()

if __name__ == "__main__":
    main()
