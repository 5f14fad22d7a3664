"""What every command (``tuner.run``, ``tuner.check``, ``tuner.plan``, ``tuner.report``) does with bad input and
logging."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tuner import _ray, config

EXIT_BAD_INPUT = 2
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
T = TypeVar("T")


def fail(message: str) -> NoReturn:
    """One line on stderr that says what to fix, and exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def quiet_libraries() -> None:
    """Only the platform's own lines reach the console: Hydra's logging lets third-party INFO through."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("tuner").setLevel(logging.INFO)
    # MLflow sets its own loggers to INFO when imported ("Creating initial MLflow database tables...");
    # it reads this variable then. Imported already (a test process): set the level directly too.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"])
    # Tune's advice on Ctrl-C names a Python API; the driver prints the command that resumes instead.
    _ray.quiet_restore_hint()
    _ray.quiet_experiment_analysis()


def command(body: Callable[[Any], T], cfg: Any) -> T:
    """Run a command's body on the composed config: quiet libraries, checked settings, one line on bad input."""

    # The interpreter's last garbage collection walks every object torch, Ray and MLflow made (2 s at exit on
    # 2 cores). atexit runs before it: by then the command has saved what it keeps, and the process's memory
    # goes back to the OS as it exits.
    atexit.register(gc.freeze)
    quiet_libraries()
    try:
        return body(config.to_settings(cfg))
    except config.ConfigError as exc:  # includes StorageError
        fail(str(exc))


def available_searches() -> list[str]:
    """The searches Hydra can see: the built-in ones and those under any --config-dir."""

    dirs = [CONF_DIR]
    if HydraConfig.initialized():
        dirs += [Path(s.path) for s in HydraConfig.get().runtime.config_sources if s.provider == "command-line"]
    return sorted({p.stem for d in dirs for p in (d / "search").glob("*.yaml")})


def search_command(body: Callable[[Any], int], cfg: Any) -> NoReturn:
    """A command over one search (``tuner.run``, ``tuner.check``): refuse a config without ``+search``, run
    ``body`` on the checked settings, exit with its status."""

    if OmegaConf.is_missing(cfg.search, "name"):
        fail(f"no search chosen: add +search=NAME, one of: {', '.join(available_searches())}")
    sys.exit(command(body, cfg))
