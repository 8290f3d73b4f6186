"""The run folder: what a training run keeps on disk, how it is opened, resumed and saved.

A run folder holds ``last.pt`` (weights, optimizer, scheduler, scaler, every random-number state, the config and
the history: everything an exact resume needs), ``best.pt`` (the best val mIoU so far, hard-linked to ``last.pt``
while they are equal) and ``history.json``. ``RunState`` is a run in one object; its ``state_dict`` and
``load_state_dict`` are the one writer and the one reader of ``last.pt``. Only rank 0 reads and writes the
folder. Nothing is changed before the data and the model have passed their checks: ``open_run`` only looks,
``prepare_run_folder`` then creates the folder and clears an old run (``overwrite``). Checkpoints are written
atomically (``checkpoint.save_checkpoint``).

One process trains in a run folder at a time (``RunLock``): rank 0 holds it from ``open_run`` (or from the
folder's creation) until ``train`` returns or raises; a second training there stops at once, naming the holder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from .classes import ClassTable
from .config import TrainConfig
from .distributed import Runtime, all_gather, log, on_rank0
from .model import load_weights
from .model_info import ModelInfo
from .outputs import OutputError, atomic_write, is_input, link_or_copy, output_folder, remove_stale_temporaries
from .rng import rng_state, set_rng_state

try:
    import fcntl
except ImportError:  # Windows: no flock; there a second training in one run folder is not refused
    fcntl = None

__all__ = ["LAST", "BEST", "HISTORY", "RUN_FILES", "LOCK", "RunFolderBusy", "RunLock", "RunState", "empty_history",
           "open_run", "prepare_run_folder", "save_run", "write_history", "best_text"]

LAST, BEST, HISTORY = "last.pt", "best.pt", "history.json"
RUN_FILES = (LAST, BEST, HISTORY)  # a folder holding any of them holds a run
LOCK = ".lock"  # held by the process training in the folder; not part of the run


def empty_history() -> dict[str, Any]:
    return {"iter": [], "loss": [], "lr": [], "val_iter": [], "val_miou": [], "val_pixel_acc": []}


def best_text(history: dict[str, Any]) -> str:
    """Return "best val mIoU X% at iteration N" (or that there is no score) for a history."""
    if not history.get("val_miou"):
        return "no validation score"
    best = int(np.argmax(history["val_miou"]))
    return f"best val mIoU {100 * history['val_miou'][best]:.2f}% at iteration {history['val_iter'][best]}"


# ----------------------------------------------------------------------------------------------------
# Holding: one process trains in a run folder at a time


class RunFolderBusy(OutputError):
    """Another live process is training in the run folder; the message names the folder and that process."""


_HELD: set[int] = set()  # the lock files this process holds, by descriptor


def _drop_held_in_child() -> None:
    # A forked child (a DataLoader worker) shares the lock with its parent; were the parent killed, the child would
    # keep it until it noticed. Closing the child's copy leaves the parent's lock as it is.
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if fcntl is not None:
    os.register_at_fork(after_in_child=_drop_held_in_child)


class RunLock:
    """A run folder held by this process: an advisory lock (``flock``) on its ``.lock`` file, which names the
    holder (pid and host) for the message another process gets. The system drops the lock when its process ends,
    however it ends (``kill -9``, a closed notebook kernel), so a dead holder never blocks the next start;
    ``release`` removes the file. ``acquire`` and ``release`` may be called more than once."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._path = self.folder.absolute() / LOCK  # the same file, whatever the working folder is by then
        self._fd: int | None = None

    def acquire(self) -> None:
        """Hold the folder (it must exist), or raise RunFolderBusy naming the process that holds it."""
        if self._fd is not None or fcntl is None:
            return
        path = self._path
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                os.close(fd)
                raise RunFolderBusy(
                    f"{self.folder}: another process{f' ({holder})' if holder else ''} is training in this run "
                    f"folder; wait for it to finish, or choose another --out (out_dir)") from None
            except OSError:  # a filesystem without locks (some network mounts): not held, as on Windows
                os.close(fd)
                return
            try:
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # its holder removed the file between our open and our lock: take the new one
        self._fd = fd
        _HELD.add(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())

    def release(self) -> None:
        """Let the folder go: the file is removed while still held (so whoever opens it next sees it gone)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._path)
        _HELD.discard(self._fd)
        os.close(self._fd)
        self._fd = None


# ----------------------------------------------------------------------------------------------------
# Opening: look, change nothing


def open_run(config: TrainConfig, rt: Runtime, table: ClassTable, lock: RunLock | None = None
             ) -> dict[str, Any] | None:
    """Return the state to resume from (None: a fresh start) of a run on the classes of ``table``, after checking
    the run folder (on rank 0). An existing folder is held (``lock``) before anything in it is read."""
    return on_rank0(rt, lambda: _read_run_folder(config, rt, table, lock))


def _holds_a_run(out_dir: Path, found: list[str]) -> FileExistsError:
    return FileExistsError(f"{out_dir} holds a run ({', '.join(found)}): pass resume=True (--resume) to continue "
                           f"it, or overwrite=True (--overwrite) to start again and replace it")


def _read_run_folder(config: TrainConfig, rt: Runtime, table: ClassTable, lock: RunLock | None
                     ) -> dict[str, Any] | None:
    """Check the run folder and return the state of its ``last.pt`` on a resume. Nothing is created or removed
    here (but the lock file of a folder that exists): the folder is made, and an old run cleared
    (``overwrite``), once the data and the model are ready (``prepare_run_folder``)."""
    out_dir = output_folder(config.out_dir, data_root=config.data_root, option="--out (out_dir)", create=False)
    if lock is not None and out_dir.is_dir():
        lock.acquire()
    last_path = out_dir / LAST
    found = [name for name in RUN_FILES if (out_dir / name).is_file()]
    if not config.resume:
        if found and not config.overwrite:
            raise _holds_a_run(out_dir, found)
        weights = Path(str(config.weights))
        if found and weights.is_file() and is_input(weights, [out_dir / name for name in found]):
            raise OutputError(f"{weights}: --weights is a file of the run in {out_dir} that --overwrite would "
                              f"remove; copy it elsewhere first, or choose another --out")
        return None
    if not last_path.is_file():
        if found:
            raise FileExistsError(
                f"{out_dir} holds {', '.join(found)} but no {LAST} to resume from: pass overwrite=True "
                f"(--overwrite) instead of resume to start again and replace them, or choose another out_dir")
        log(rt, f"no {last_path} to resume from: starting from iteration 0")
        return None
    state = load_checkpoint(last_path)
    RunState.check_resumable(state, config, last_path, table)
    return state


def prepare_run_folder(config: TrainConfig, rt: Runtime, fresh: bool, lock: RunLock | None = None) -> None:
    """Create ``out_dir`` (and hold it: ``lock``) and remove what a killed save left in it; on a fresh start
    (``overwrite``), remove the files of the earlier run it holds. On rank 0; its error reaches every process."""

    def prepare() -> None:
        out_dir = output_folder(config.out_dir, data_root=config.data_root, option="--out (out_dir)")
        if lock is not None:
            lock.acquire()
        found = [name for name in RUN_FILES if (out_dir / name).is_file()]
        if fresh and found and not config.overwrite:  # a run another process finished since open_run looked
            raise _holds_a_run(out_dir, found)
        for path in remove_stale_temporaries(out_dir, RUN_FILES):
            log(rt, f"removed {path.name}: left by a save that did not finish")
        for name in RUN_FILES if fresh else ():
            (out_dir / name).unlink(missing_ok=True)

    on_rank0(rt, prepare)


# ----------------------------------------------------------------------------------------------------
# The state of a run, saved and resumed in one object


@dataclass
class RunState:
    """Everything a training run is between two steps: what ``last.pt`` holds, and what ``--resume`` restores.

    ``model`` is the bare network (not its DistributedDataParallel wrapper); ``iteration`` is the last finished
    step; ``history`` the losses and scores so far; ``best_miou`` the best val mIoU so far (-1 before the first
    validation). ``state_dict`` and ``load_state_dict`` below are the one writer and the one reader of the format.
    """

    config: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    iteration: int = 0
    best_miou: float = -1.0
    history: dict[str, Any] = field(default_factory=empty_history)
    info: ModelInfo = field(default_factory=lambda: ModelInfo(ClassTable.cityscapes()))  # what the model is

    def state_dict(self, rngs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Return the checkpoint: every state above, the config, and the random-number states ``rngs`` (one per
        process, in rank order; None: this process's)."""
        rngs = rngs if rngs is not None else [rng_state()]
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "iteration": self.iteration,
            "rng": [{**r, "torch": r["torch"].cpu()} for r in rngs],
            "config": self.config.to_dict(),
            "info": self.info.to_dict(),
            "history": self.history,
            "best_miou": self.best_miou,
        }

    def load_state_dict(self, state: dict[str, Any], rank: int = 0, source: str | Path = LAST) -> None:
        """Restore a checkpoint (``load_checkpoint``'s dict) read from ``source``: weights, optimizer, schedule,
        scaler, iteration, history, best score, and the random-number state of process ``rank``."""
        load_weights(self.model, state["model"], source)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.history = {**empty_history(), **state["history"]}
        self.best_miou = float(state["best_miou"])
        rngs = state["rng"]
        set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])

    @staticmethod
    def check_resumable(state: dict[str, Any], config: TrainConfig, source: str | Path, table: ClassTable) -> None:
        """Raise ValueError when ``config`` on the classes of ``table`` cannot continue the run of ``state`` (read
        from ``source``)."""
        saved = state["config"]
        if int(saved["iters"]) != config.iters:
            raise ValueError(f"{source} was written by a run of {saved['iters']} iterations (the lr schedule "
                             f"depends on it); resume with iters={saved['iters']}")
        saved_table = ModelInfo.from_checkpoint(state, state["model"], source).classes
        if saved_table != table:
            other = "the same class names with other colours or ignore values" if saved_table.names == table.names \
                else f"other classes ({saved_table.brief()})"
            raise ValueError(f"{source} was written by a run on {other} than {table.source} ({table.brief()}); resume "
                             f"on the same data and classes, or start a new --out (fine-tune from it with --weights)")
        optimizer = saved.get("optimizer", "sgd")  # checkpoints older than the option were all SGD
        if optimizer != config.optimizer:
            raise ValueError(f"{source} was written by a run with optimizer {optimizer} (its state is in the "
                             f"file); resume with optimizer={optimizer} (--optimizer {optimizer}), not "
                             f"{config.optimizer}")


def save_run(run: RunState, rt: Runtime, improved: bool = False) -> None:
    """Write ``last.pt`` (and ``best.pt`` when ``improved``) and ``history.json`` on rank 0, with every process's
    random-number state."""
    rngs = all_gather(rt, rng_state())
    if rt.main:
        out_dir = Path(run.config.out_dir)
        save_checkpoint(out_dir / LAST, run.state_dict(rngs))
        if improved:
            link_or_copy(out_dir / LAST, out_dir / BEST)
        write_history(out_dir, run.history)
    if rt.world_size > 1:
        dist.barrier()  # no process runs ahead (or exits) while rank 0 is still writing


def write_history(out_dir: Path, history: dict[str, Any]) -> None:
    """Write ``history.json`` atomically."""
    text = json.dumps(history, indent=1) + "\n"
    atomic_write(out_dir / HISTORY, lambda f: f.write(text.encode()))
