"""Full-state checkpoints with a checksum manifest written last.

A checkpoint directory holds ``state.pt`` and ``manifest.json``. The manifest is
written only after every other file is complete, so a checkpoint interrupted while
being written has no manifest (or a mismatching one) and is refused on restore
instead of silently loading a half-written model.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose files do not match its manifest (or that has none)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy and torch, in types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np_s = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np_s["key"].numpy().astype(np.uint32), "pos": np_s["pos"]},
            "has_gauss": np_s["has_gauss"],
            "gauss": np_s["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, nested dicts) and then its manifest."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    state_path = root / STATE_FILE
    torch.save(state, state_path)
    with state_path.open("rb+") as f:
        os.fsync(f.fileno())
    manifest = {"format": FORMAT_VERSION, "files": {STATE_FILE: _sha256(state_path)}}
    _fsync_write(root / MANIFEST_FILE, json.dumps(manifest).encode())


def verify(directory: str | os.PathLike[str]) -> None:
    """Raise :class:`CorruptCheckpointError` unless every file matches the manifest."""
    root = Path(directory)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CorruptCheckpointError(f"checkpoint {root} has no {MANIFEST_FILE} (incomplete write)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(f"checkpoint {root}: unreadable manifest ({exc})") from exc
    for name, expected in files.items():
        path = root / name
        if not path.is_file():
            raise CorruptCheckpointError(f"checkpoint {root} is missing {name}")
        if _sha256(path) != expected:
            raise CorruptCheckpointError(f"checkpoint {root}: {name} does not match its checksum")


def load(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Verify, then load a checkpoint written by :func:`save` (onto the CPU)."""
    verify(directory)
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
