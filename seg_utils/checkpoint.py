"""Checkpoints: written atomically, read once, safely.

* ``save_checkpoint`` writes through a temporary file in the same folder, fsyncs it and renames it into place
  (``outputs.atomic_write``): a crash while saving leaves the previous file as it was; a failed write (a full disk)
  is one ``OutputError`` line, the temporary file removed.
* ``load_checkpoint_state`` is the one reader: ``torch.load(weights_only=True)`` (tensors and plain types; a
  file that would run code is refused unrun), and every way a file can be wrong becomes one
  ``CheckpointError`` line naming it. It returns (model state dict, everything else) from a single read.
* ``load_checkpoint`` is the same for the engine's training checkpoints (``last.pt`` / ``best.pt``), whose
  format it checks.
"""

from __future__ import annotations

import io
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from .outputs import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint_state",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "seg_utils.engine/2"  # 2: the model record (``model_info``) in "info"
_READABLE_FORMATS = ("seg_utils.engine/1", CHECKPOINT_FORMAT)  # 1: its parts in "classes", "frame_size", "config"


class CheckpointError(ValueError):
    """A checkpoint file of this project cannot be used: unreadable, unsafe, or for another model."""


def _tensor_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Return the bytes of the tensors in a nested state (each storage once): about a checkpoint's size."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        key = obj.untyped_storage().data_ptr() if obj.device.type != "meta" else id(obj)
        if key in seen:
            return 0
        seen.add(key)
        return obj.untyped_storage().nbytes()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in obj)
    return 0


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename): a crash leaves the previous file intact; a full
    disk is one line with the space left and the space the checkpoint needs."""
    atomic_write(path, lambda f: torch.save(state, f), size=_tensor_bytes(state))


# What a file of tensors refers to (used only when torch's own list, private, is not there): torch's rebuild
# functions, storages and dtypes, and a few containers.
_TENSOR_GLOBALS = {"collections.OrderedDict", "builtins.set", "builtins.frozenset", "builtins.bytearray",
                   "builtins.slice", "_codecs.encode"}
_DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def _allowed_globals() -> set[str] | None:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except (ImportError, AttributeError, TypeError):
        return None


def _is_tensor_global(name: str, allowed: set[str] | None) -> bool:
    if allowed is not None:
        return name in allowed
    return name.split(".")[0] == "torch" or name in _TENSOR_GLOBALS


def _pickled_globals(path: Path) -> list[str]:
    """Return the globals ("module.name") the pickles of a file refer to, read without running anything
    (pickletools only lists opcodes): the data.pkl of torch's zip format, or the pickles at the start of a
    legacy file. Empty when the file holds no readable pickle."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                data = archive.read(names[0]) if names else b""
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile, KeyError):
        return []
    stream, found = io.BytesIO(data), []
    while stream.tell() < len(data):  # the legacy format is several pickles, then raw storage bytes
        strings: list[str] = []  # the strings pushed so far: STACK_GLOBAL takes module and name from them
        memo: dict[int, str | None] = {}
        top: str | None = None  # the string on top of the stack, if the last opcode pushed one
        named: list[str] = []
        try:
            for op, arg, _ in pickletools.genops(stream):
                name, pushed = op.name, None
                if name in ("GLOBAL", "INST"):
                    named.append(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL" and len(strings) >= 2:
                    named.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str) and ("UNICODE" in name or "STRING" in name):
                    pushed = arg
                elif name == "MEMOIZE":
                    memo[len(memo)], pushed = top, top
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg], pushed = top, top
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed = memo.get(arg)
                if pushed is not None and pushed is not top:
                    strings.append(pushed)
                top = pushed
        except Exception:  # not (or no longer) a pickle: only whole pickles (up to their STOP) count
            break
        found.extend(g for g in named if _DOTTED_NAME.match(g))
    return found


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
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": our one line says what matters
            warnings.simplefilter("ignore")
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses a global before calling it; garbage bytes raise anything
        allowed = _allowed_globals()
        unsafe = [g for g in _pickled_globals(path) if not _is_tensor_global(g, allowed)]
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path} refused: it holds a pickled Python object ({unsafe[0]}), not only tensors, "
                f"and loading it could run code; nothing was run") from None
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(err).__name__}): expected a file written by torch.save"
        ) from None

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
    if meta.get("format") not in _READABLE_FORMATS:
        raise CheckpointError(f"{path}: not a training checkpoint of seg_utils.engine (expected format "
                              f"{CHECKPOINT_FORMAT!r}; build_model(weights=path) loads bare weights)")
    return {"model": state, **meta}
