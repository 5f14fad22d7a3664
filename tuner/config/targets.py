"""Config schemas generated from the signature of the API they feed (``_target_`` nodes).

``builds("optuna.samplers.TPESampler", seed=0)`` is a dataclass with ``_target_`` and one
field per keyword argument whose default a config can hold (numbers, strings, booleans,
None), defaulting to the API's own default unless the platform overrides it here. Hydra
checks keys and simple types against it at compose time, and ``hydra.utils.instantiate``
calls the API with it, so the API's signature is the one source of its defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Optional

from hydra.utils import get_object

_SIMPLE = {"int": int, "float": float, "str": str, "bool": bool, "None": None, "Optional": Optional}


def _field_type(annotation: Any) -> Any:
    """int/float/str/bool or Optional of one; Any for everything else."""
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, {"__builtins__": {}}, _SIMPLE)  # noqa: S307 - names limited to _SIMPLE
        except Exception:
            return Any
    if annotation in (int, float, str, bool):
        return annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return Optional[inner] if inner in (int, float, str, bool) else Any
    return Any


def _configurable(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def builds(target: str, exclude: tuple[str, ...] = (), **overrides: Any) -> type:
    """A dataclass schema for ``target``'s keyword arguments (``overrides``: the platform's defaults)."""
    obj = get_object(target)
    fields: list[tuple[str, Any, Any]] = [("_target_", str, dataclasses.field(default=target))]
    for name, param in inspect.signature(obj).parameters.items():
        if name in exclude or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = overrides.pop(name, param.default)
        if default is param.empty or not _configurable(default):
            continue  # a callable or an object: the API's own default stands, a config cannot hold it
        kind = _field_type(param.annotation)
        if default is None and kind not in (Any,) and typing.get_origin(kind) is not typing.Union:
            kind = Optional[kind]
        fields.append((name, kind, dataclasses.field(default=default)))
    if overrides:
        raise TypeError(f"{target} has no keyword arguments {sorted(overrides)}")
    return dataclasses.make_dataclass(f"{target.rsplit('.', 1)[-1]}Conf", fields)
