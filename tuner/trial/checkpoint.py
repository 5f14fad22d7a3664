"""Checkpoints as directories with a checksum manifest written last.

A checkpoint directory holds the user's payload (``state.pt``, written from a state dict,
or the files of a directory a framework wrote), the platform's ``tuner.json`` (progress
and interruption counters) and ``manifest.json`` with a SHA-256 per file. The manifest
is written only after every other file is complete, so a checkpoint interrupted while
being written has no manifest (or a mismatching one) and is refused on restore instead
of silently loading half a model; the previous intact checkpoint is used instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import pyarrow.fs
import torch
from ray import tune

from tuner.result_keys import TRAIN_TIME_S

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
META_FILE = "tuner.json"
RNG_FILE = "rng.pt"  # every worker's RNG states when the checkpoint was written, by rank
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 2
RESERVED = (META_FILE, RNG_FILE, MANIFEST_FILE)


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose files do not match its manifest (or that has none)."""


class CheckpointStateError(TypeError):
    """A state that cannot be written: the message says which and why."""


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint in a local directory (``path``) that lives as long as the trial attempt.

    It also holds the RNG states (Python, NumPy, torch CPU and every CUDA device) of every worker at the
    moment it was written: :meth:`load` puts this worker's back (``rank``), so that dropout masks, random
    augmentations and shuffles after a resume draw what the uninterrupted run drew, and the resumed trial
    is bit-identical. Load it after building the model and optimizer (their initialisation draws from the
    same RNGs). ``rng``: the default of :meth:`load` (``checkpoint.rng``)."""

    path: str
    rank: int = 0
    rng: bool = True

    def load(self, rng: Optional[bool] = None) -> Any:
        """The state given to ``report(checkpoint=...)``, ``step`` or ``save`` as a state dict; RNG states put
        back as they were when it was written unless ``rng=False`` (default: ``checkpoint.rng``).

        Loaded with ``weights_only=False``: the state may hold any object ``torch.save``
        writes, and the file is the trial's own, verified against its manifest."""
        state_path = Path(self.path) / STATE_FILE
        if not state_path.is_file():
            raise FileNotFoundError(f"checkpoint {self.path} holds files, not a state dict: read them from .path")
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if self.rng if rng is None else rng:
            self.restore_rng()
        return state

    def restore_rng(self) -> bool:
        """Put back this worker's RNG states as they were when the checkpoint was written (for checkpoints of
        files a framework wrote, which :meth:`load` does not read). False when it holds none for this rank (a
        checkpoint written with ``checkpoint.rng=false``, or by a narrower trial than this one)."""
        path = Path(self.path) / RNG_FILE
        if not path.is_file():
            return False
        states = torch.load(path, map_location="cpu", weights_only=False)
        if self.rank >= len(states):
            return False
        set_rng_state(states[self.rank])
        return True


# -- RNG capture (every checkpoint of the session records it; offered to users who write their own) ------
def rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy and torch (and CUDA when present), as plain tensors and numbers."""
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


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Put back what :func:`rng_state` captured."""
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


# -- writing and verifying ----------------------------------------------------------------------------
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


def _payload_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in RESERVED)


def write(
    directory: Union[str, os.PathLike[str]],
    state: Union[Mapping[str, Any], str, os.PathLike[str]],
    meta: Mapping[str, Any],
    rng: Optional[list[dict[str, Any]]] = None,
) -> None:
    """Write ``state`` (a state dict, or the path of a directory to copy in), ``meta``, the workers' RNG states
    (``rng``, by rank, if given), then the manifest."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(state, (str, os.PathLike)):
        source = Path(state)
        if not source.is_dir():
            raise CheckpointStateError(f"checkpoint directory {source} does not exist")
        clash = [name for name in RESERVED if (source / name).exists()]
        if clash:
            raise CheckpointStateError(f"checkpoint directory {source} holds {clash[0]}, a name the platform reserves")
        shutil.copytree(source, root, dirs_exist_ok=True)
    else:
        try:
            torch.save(state, root / STATE_FILE)
        except Exception as exc:  # pickling errors come as TypeError, AttributeError, PicklingError, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CheckpointStateError(
                f"checkpoint state cannot be saved by torch.save ({type(exc).__name__}: {first}): "
                "keep tensors, numbers, strings and containers of them in it"
            ) from exc
    if rng is not None:
        torch.save(rng, root / RNG_FILE)
    _fsync_write(root / META_FILE, json.dumps(meta).encode())
    files = {p.relative_to(root).as_posix(): _sha256(p) for p in _payload_files(root)}
    for name in (RNG_FILE, META_FILE):
        if (root / name).is_file():
            files[name] = _sha256(root / name)
    _fsync_write(root / MANIFEST_FILE, json.dumps({"format": FORMAT_VERSION, "files": files}).encode())


def verify(directory: Union[str, os.PathLike[str]]) -> None:
    """Raise :class:`CorruptCheckpointError` unless every file in the manifest is there and matches."""
    root = Path(directory)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CorruptCheckpointError(f"checkpoint {root} has no {MANIFEST_FILE} (incomplete write)")
    try:
        files = dict(json.loads(manifest_path.read_text())["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(f"checkpoint {root}: unreadable manifest ({exc})") from exc
    for name, expected in files.items():
        path = root / name
        if not path.is_file():
            raise CorruptCheckpointError(f"checkpoint {root} is missing {name}")
        if _sha256(path) != expected:
            raise CorruptCheckpointError(f"checkpoint {root}: {name} does not match its checksum")


def read_meta(directory: Union[str, os.PathLike[str]]) -> dict[str, Any]:
    """The platform's record in a verified checkpoint (empty for one written by an older version)."""
    path = Path(directory) / META_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


# -- finding the newest intact checkpoint in storage --------------------------------------------------
# Tune numbers a restarted trial's checkpoints on from the last one its driver recorded; after a driver
# lost its state before recording any, a restarted trial writes over its own older directories. So a
# directory's name does not say how far training had got: its record does (then its name).
Age = tuple[float, float, str]  # (reports, training seconds, name): -1 where the record says nothing


def _age(path: str, filesystem: Any) -> Age:
    """How far training had got in the checkpoint at ``path``, by its record, then its name."""
    name = path.rsplit("/", 1)[-1]
    try:
        with filesystem.open_input_stream(f"{path}/{META_FILE}") as f:
            progress = dict(json.loads(f.read()).get("progress") or {})
        return float(progress.get("reports", -1)), float(progress.get(TRAIN_TIME_S, -1)), name
    except (OSError, ValueError, TypeError, AttributeError):
        return -1.0, -1.0, name


def _kept(parent: str, filesystem: Any) -> list[str]:
    """Paths of the ``checkpoint_NNNNNN`` directories under a trial's directory."""

    infos = filesystem.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True))
    return [
        f"{parent}/{i.base_name}"
        for i in infos
        if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith("checkpoint_")
    ]


class Restored(NamedTuple):
    """A checkpoint fetched to resume from; ``unreported``: newer than the one Tune recorded (written
    just before its node went, its result never reached the driver), so it must be reported again."""

    path: Path
    unreported: bool


def _gone(checkpoint: Any) -> bool:
    return bool(checkpoint.filesystem.get_file_info(checkpoint.path.rstrip("/")).type == pyarrow.fs.FileType.NotFound)


def stand_in(recorded: Any) -> Any:
    """``recorded`` if it still exists, else the oldest checkpoint kept beside it: Tune refuses to restore
    a trial from a checkpoint that is gone; the session then restores the newest and reports it again."""
    kept = candidates(recorded) if _gone(recorded) else []
    return kept[-1][0] if kept else recorded


def candidates(recorded: Any) -> list[tuple[Any, Age]]:
    """Checkpoints to try with their age, newest first: every one kept beside the one Tune recorded, newer
    ones too (written just before the node went, their result lost with it), and the recorded one unless
    it is gone (deleted by ``num_to_keep`` after the driver last saved its state)."""
    path = recorded.path.rstrip("/")
    parent, name = path.rsplit("/", 1)
    gone = _gone(recorded)
    if not name.startswith("checkpoint_"):  # not laid out by Tune: only what it recorded
        return [] if gone else [(recorded, _age(path, recorded.filesystem))]
    ordered = _newest_first({*_kept(parent, recorded.filesystem), *([] if gone else [path])}, recorded.filesystem)
    if gone and ordered:
        log.warning(
            "checkpoint %s is gone (deleted after the driver last saved its state); trying %s", path, ordered[0][0].path
        )
    return ordered


def _newest_first(paths: Iterable[str], filesystem: Any) -> list[tuple[Any, Age]]:
    aged = [(tune.Checkpoint(p, filesystem=filesystem), _age(p, filesystem)) for p in paths]
    return sorted(aged, key=lambda checkpoint_age: checkpoint_age[1], reverse=True)


def fetch_newest_intact(recorded: Any, into: Path, trial_id: str) -> Optional[Restored]:
    """Download the newest intact candidate of trial ``trial_id`` into ``into``; None when none is intact.
    A checkpoint newer than the recorded one counts only if it is the trial's own (PBT may hand a
    trial another trial's checkpoint: then only that one and older ones)."""
    path = recorded.path.rstrip("/")
    return _fetch_first_intact(candidates(recorded), _age(path, recorded.filesystem), path, into, trial_id)


def fetch_unrecorded(storage: Optional[tuple[Any, str]], into: Path, trial_id: str) -> Optional[Restored]:
    """With no checkpoint recorded by Tune: the newest intact one the trial wrote in its directory
    ``storage`` (filesystem, path) before a driver killed meanwhile saved its state; None when none
    (or when storage cannot be listed: the trial starts afresh, as a new one does)."""
    if storage is None:
        return None
    filesystem, trial_dir = storage
    try:
        kept = _newest_first(_kept(trial_dir.rstrip("/"), filesystem), filesystem)
    except OSError as exc:
        log.warning("cannot list %s for checkpoints (%s); starting the trial afresh", trial_dir, exc)
        return None
    return _fetch_first_intact(kept, (-1.0, -1.0, ""), "", into, trial_id) if kept else None


def _fetch_first_intact(
    ordered: list[tuple[Any, Age]], recorded_age: Age, recorded_path: str, into: Path, trial_id: str
) -> Optional[Restored]:
    """The first of ``ordered`` that downloads and verifies; one newer than the recorded one (``recorded_path``
    "" when none is recorded) only if it is trial ``trial_id``'s own."""
    for i, (candidate, age) in enumerate(ordered):
        local = into / f"restore-{i}"
        path = candidate.path.rstrip("/")
        try:
            candidate.to_directory(str(local))
            verify(local)
        except (CorruptCheckpointError, OSError) as exc:
            log.warning("%s; trying the previous checkpoint", exc)
            shutil.rmtree(local, ignore_errors=True)
            continue
        newer = age > recorded_age
        if newer and read_meta(local).get("trial_id") != trial_id:
            shutil.rmtree(local, ignore_errors=True)
            continue
        if path != recorded_path:
            log.warning("restored %s instead of the recorded checkpoint %s", candidate.path, recorded_path or "(none)")
        return Restored(local, unreported=newer)
    log.error(
        "no intact checkpoint for this trial under %s: starting it from scratch", recorded_path or ordered[0][0].path
    )
    return None
