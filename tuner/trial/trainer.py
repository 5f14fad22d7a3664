"""A search's training function: found, checked and given its settings before anything starts.

``search.trainer: mypkg.train:fit`` names a function the platform calls in one of two ways:

- ``fit(config, settings)``: ``settings`` is the search's ``workload:`` section, a plain dict, or,
  when the function annotates its second parameter with a dataclass, an instance of it, so that a
  typo or a wrong type in the YAML fails with one line before the search starts (the built-in
  searches are typed that way);
- ``fit(config, *, epochs=30, seed=0)``, a function written the ordinary way (every parameter after
  the first keyword-only): the ``workload:`` section comes as keywords, checked against the signature
  before the search starts (a key it does not take, or a keyword without a default that is missing,
  is one line).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import traceback
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tuner.config import ConfigError

PLATFORM_DIR = Path(__file__).resolve().parent.parent  # frames in here are the platform's, not the user's


def load(spec: str, key: str = "search.trainer") -> Callable[..., Any]:
    """Import ``module:function`` and check it can be called as ``fn(config, settings)``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{key}={spec!r}: write it as module:function (e.g. mypkg.train:fit)")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise ConfigError(f"{key}={spec!r} cannot be imported ({exc}): is its package on the Python path?") from exc
    except AttributeError as exc:
        raise ConfigError(f"{key}={spec!r}: module {module_name} has no {attr!r}") from exc
    if not callable(fn):
        raise ConfigError(f"{key}={spec!r} is a {type(fn).__name__}, not a function")
    if takes_keywords(fn):
        return typing.cast(Callable[..., Any], fn)
    try:
        inspect.signature(fn).bind({}, {})
    except TypeError as exc:
        raise ConfigError(
            f"{key}={spec!r} must accept (config, settings), its signature is {inspect.signature(fn)}"
        ) from exc
    except ValueError:  # no signature to inspect (a builtin): let the call tell
        pass
    return typing.cast(Callable[..., Any], fn)


def takes_keywords(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes its settings as keywords: every parameter after the first keyword-only (at least one)."""
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except ValueError:  # no signature to inspect (a builtin)
        return False
    keywords = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD)
    return bool(params) and all(p.kind in keywords for p in params)


def call(fn: Callable[..., Any], config: dict[str, Any], settings: Any) -> Any:
    """The trainer called the way it takes its settings (see the module's docstring)."""
    return fn(config, **settings) if takes_keywords(fn) else fn(config, settings)


def settings_type(fn: Callable[..., Any]) -> Optional[type]:
    """The dataclass ``fn`` annotates its settings parameter with, if any."""
    params = list(inspect.signature(fn).parameters.values())
    if len(params) < 2:
        return None
    try:
        hint = typing.get_type_hints(fn).get(params[1].name)
    except Exception:  # an annotation that does not resolve: untyped, as far as we can tell
        return None
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def settings_for(fn: Callable[..., Any], workload: Mapping[str, Any], key: str = "search.workload") -> Any:
    """``workload`` as ``fn`` wants it: typed when it declares a dataclass, else a plain dict."""

    if takes_keywords(fn):
        return keyword_settings(fn, workload, key)
    kind = settings_type(fn)
    if kind is None:
        return dict(workload)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(kind), dict(workload)))
    except OmegaConfBaseException as exc:
        where = f"{key}.{exc.full_key}" if getattr(exc, "full_key", None) else key
        raise ConfigError(f"{where}: {str(exc).splitlines()[0]} (settings of {kind.__name__})") from exc
    except ConfigError as exc:  # the dataclass's own checks
        raise ConfigError(f"{key}: {exc}") from exc


def keyword_settings(
    fn: Callable[..., Any], workload: Mapping[str, Any], key: str = "search.workload"
) -> dict[str, Any]:
    """``workload`` as the keywords of ``fn(config, *, ...)``: every key one it takes, every keyword without a
    default given."""
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())[1:]
    name = f"{fn.__module__}:{fn.__qualname__}"
    if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params):
        unknown = sorted(set(workload) - {p.name for p in params})
        if unknown:
            takes = ", ".join(p.name for p in params)
            raise ConfigError(f"{key}.{unknown[0]}: {name} takes no such keyword (it takes: {takes})")
    missing = [
        p.name
        for p in params
        if p.kind == inspect.Parameter.KEYWORD_ONLY and p.default is p.empty and p.name not in workload
    ]
    if missing:
        raise ConfigError(f"{key}.{missing[0]} is missing: {name} needs it (a keyword without a default)")
    return dict(workload)


class TrainerError(RuntimeError):
    """The user's trainer raised: the message is its exception and where in the user's code."""


def package_root(fn: Callable[..., Any]) -> Optional[Path]:
    """The directory of the top-level package (or the file) that defines ``fn``."""
    module = inspect.getmodule(fn)
    top = importlib.import_module(module.__name__.split(".")[0]) if module else None
    where = getattr(top, "__file__", None)
    if where is None:
        return None
    path = Path(where).resolve()
    return path.parent if path.name == "__init__.py" else path


def describe(exc: BaseException, user_root: Optional[Path] = None) -> str:
    """``Type: message (at file:line in function)``: the innermost frame of the user's own code
    (under ``user_root``, else any frame outside the platform and installed libraries)."""
    text = str(exc).strip()
    what = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if user_root is not None and _under(f.filename, user_root)]
    mine = mine or [f for f in frames if not _platform_or_library(f.filename)]
    if not mine:
        return what
    frame = mine[-1]
    where = Path(frame.filename)
    if user_root is not None and _under(frame.filename, user_root):
        where = Path(frame.filename).resolve().relative_to(user_root.parent)
    return f"{what} (at {where}:{frame.lineno} in {frame.name})"


def _under(filename: str, root: Path) -> bool:
    path = Path(filename).resolve()
    return path == root or root in path.parents


def summary_from_error_text(text: str) -> Optional[str]:
    """The trainer's line in the error text Tune keeps for a failed trial (``error.txt``)."""
    marker = f"{TrainerError.__name__}: "
    lines = [line for line in text.splitlines() if marker in line]
    return lines[-1].split(marker, 1)[1].strip() if lines else None


def _platform_or_library(filename: str) -> bool:
    path = Path(filename).resolve()
    return PLATFORM_DIR in path.parents or "site-packages" in path.parts or "dist-packages" in path.parts
