"""Checkpoints: written atomically, read once, safely.

* ``save_checkpoint`` writes through a temporary file in the same folder, fsyncs it and renames it into place:
  a crash while saving leaves the previous file as it was.
* ``load_checkpoint_state`` is the one reader: ``torch.load(weights_only=True)`` (tensors and plain types; a
  file that would run code is refused unrun), and every way a file can be wrong becomes one
  ``CheckpointError`` line naming it. It returns (model state dict, everything else) from a single read.
* ``load_checkpoint`` is the same for the engine's training checkpoints (``last.pt`` / ``best.pt``), whose
  format it checks.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "atomic_write",
    "save_checkpoint",
    "link_or_copy",
    "load_checkpoint_state",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "seg_utils.engine/1"


class CheckpointError(ValueError):
    """A checkpoint file of this project cannot be used: unreadable, unsafe, or for another model."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` through a temporary file in the same folder: either the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename): a crash leaves the previous file intact."""
    atomic_write(path, lambda f: torch.save(state, f))


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold what ``src`` holds now (a hard link when possible: no second write), atomically."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)  # last.pt is later replaced by a new inode, so best.pt keeps this content
        _fsync_dir(dst.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        with open(src, "rb") as source:
            atomic_write(dst, lambda f: shutil.copyfileobj(source, f))


def load_checkpoint_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (model state dict, everything else in the file) of a checkpoint of this project, in one read.

    Accepts a bare state dict or the engine's {"model": state_dict, "optimizer": ..., "iteration": int,
    "config": {...}}. Loaded with ``weights_only=True``: a file that would run code is refused, unrun.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found (weights must be imagenet, coco, none or a checkpoint file)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses any global it does not allow before calling it, so nothing ran. Garbage bytes
        # are an UnpicklingError too ("Unsupported operand"), so tell the two apart by the refused global.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:
            raise CheckpointError(
                f"checkpoint {path} is unreadable (UnpicklingError): expected a file written by torch.save"
            ) from err
        raise CheckpointError(
            f"checkpoint {path} refused: it holds a pickled Python object ({found.group(1)}), not only tensors, "
            f"and loading it could run code; nothing was run"
        ) from err
    except Exception as err:  # garbage bytes surface as anything from EOFError to KeyError in the unpickler
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(err).__name__}): expected a file written by torch.save"
        ) from err

    if isinstance(content, dict) and isinstance(content.get("model"), dict):
        state, meta = content["model"], {k: v for k, v in content.items() if k != "model"}
    elif isinstance(content, dict) and content and all(isinstance(v, torch.Tensor) for v in content.values()):
        state, meta = content, {}
    else:
        raise CheckpointError(
            f"checkpoint {path} holds a {type(content).__name__}: expected a state dict or a dict with key 'model'"
        )
    # DistributedDataParallel and torch.compile save their wrappers' prefixes; the model's keys have none.
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state, meta


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Return a training checkpoint of the engine as one dict: "model", "optimizer", "scheduler", "scaler",
    "iteration", "rng", "config", "history", "best_miou" (tensors on the CPU)."""
    state, meta = load_checkpoint_state(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a training checkpoint of seg_utils.engine (expected format "
                              f"{CHECKPOINT_FORMAT!r}; build_model(weights=path) loads bare weights)")
    return {"model": state, **meta}
