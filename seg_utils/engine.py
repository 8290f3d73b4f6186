"""Training and validation: the iteration-based recipe of mmsegmentation, on one CPU, one GPU or many.

``train_step`` is one optimisation step (forward under autocast, loss with the aux term, backward, step);
``validate(model, loader, device)`` scores a model with one confusion matrix over a split; ``train(config)`` runs
the whole loop and returns the history (loss and lr per iteration, val mIoU every ``val_every``). It reads top to
bottom: open or resume the run (``runs``), build the loaders (``loaders``), model, optimizer (``optim``) and loss
(``losses``), then loop: step, log, validate, save. The recipe and the profiles are in ``config``.

Resuming is exact: the batch of iteration ``i`` depends only on ``(seed, i)`` and ``last.pt`` holds every
random-number state, so a run stopped and resumed on CPU computes the very same losses as one that never stopped.
Under ``torchrun --nproc_per_node K`` (``distributed``) every process takes ``batch_size / K`` of each global
batch, gradients are averaged by DistributedDataParallel, validation frames are sharded and the confusion
matrices summed; only rank 0 prints and writes files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import dataset_root
from .device import autocast, grad_scaler, memory_format, resolve_amp, to_device
from .distributed import Runtime, gather_indices, log, start_runtime, wrap
from .labels import IGNORE_INDEX, num_classes
from .loaders import make_loaders
from .losses import compute_loss, make_criterion
from .metrics import ConfusionMatrix
from .model import WeightsUnavailableError, build_model, load_weights
from .optim import make_optimizer
from .outputs import bar_disabled
from .runs import (
    LAST,
    RunLock,
    best_text,
    empty_history,
    open_run,
    prepare_run_folder,
    resume_into,
    save_run,
    write_history,
)

__all__ = ["TrainingDiverged", "train_step", "validate", "train", "train_from_args"]

# Losses stay on the device and are brought to the host (one sync) this often, and before every checkpoint.
LOG_EVERY = 10


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the iteration. Checkpoints already on disk are
    left as they were (the last good one is ``last.pt``)."""


# ----------------------------------------------------------------------------------------------------
# One step and validation


def train_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, criterion: nn.Module, aux_weight: float = 0.4,
               amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Run one optimisation step on a batch already on the model's device; return the loss (detached, still on
    the device: reading it with ``float()`` would wait for the GPU, so the caller does that only now and then)."""
    with autocast(images.device, amp_dtype):  # convolutions in bf16 / fp16 on a GPU, float32 without amp
        outputs = model(images)
    loss = compute_loss(outputs, targets, criterion, aux_weight)  # in float32: CE + aux_weight x aux CE
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # fp16: the loss is scaled up so small gradients do not underflow
    scaler.step(optimizer)  # unscales first; skips the step if a gradient overflowed
    scaler.update()
    return loss.detach()


@contextmanager
def _without_aux(model: nn.Module) -> Iterator[None]:
    """Run a DeepLabV3 without its auxiliary head (an extra head and a full-size upsample nobody scores)."""
    aux = getattr(model, "aux_classifier", None)
    if aux is not None:
        model.aux_classifier = None
    try:
        yield
    finally:
        if aux is not None:
            model.aux_classifier = aux


@torch.no_grad()
def validate(model: nn.Module, loader: torch.utils.data.DataLoader, device: str | torch.device,
             num_classes: int = 19, amp: bool | None = None, channels_last: bool = False,
             progress: bool | None = False) -> dict[str, Any]:
    """Return the metrics dict of ``ConfusionMatrix.compute()`` (``miou``, ``iou``, ``pixel_acc`` ...) of
    ``model`` on ``loader``'s (image, target) batches, summed over all processes under torch.distributed.

    Images may be normalised float or uint8 (normalised on the device). Logits are upsampled to the label's
    size before the argmax, so labels stay at native resolution (batch 1 of full frames). ``amp`` None: the
    device's default precision (``device.autocast_dtype``). The aux head is skipped; the model's train/eval
    mode is restored afterwards.
    """
    device = torch.device(device)
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    was_training = net.training
    net.eval()
    dtype = resolve_amp(device, amp)
    fmt = memory_format(device, channels_last)
    matrix = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device)
    main = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    try:
        with _without_aux(net):
            for batch in tqdm(loader, desc="validate", leave=False, disable=bar_disabled(progress, main)):
                image, target = to_device(batch[0], batch[1], device, fmt)
                with autocast(device, dtype):
                    logits = net(image)["out"]
                if logits.shape[-2:] != target.shape[-2:]:
                    logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear",
                                           align_corners=False)
                matrix.update(logits.argmax(1), target)
    finally:
        net.train(was_training)
    return matrix.reduce().compute()


# ----------------------------------------------------------------------------------------------------
# The loop, in named pieces


def _model_for(config: TrainConfig, rt: Runtime, model: nn.Module | None,
               resume_state: dict[str, Any] | None) -> tuple[nn.Module, str]:
    """Return the model to train (built from ``config.weights``, or the one given; the checkpoint's weights
    on a resume) and a description of where its weights come from."""
    # Same initial weights on every process (DDP broadcasts rank 0's anyway); different dropout streams after.
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    note = "given model"
    if model is None:
        k = num_classes(config.label_mode)
        # A resume overwrites every weight: no need to fetch pretrained ones.
        weights = None if resume_state is not None else config.weights
        try:
            model = build_model(k, weights=weights, aux_loss=config.aux_weight > 0, output_stride=config.output_stride)
            note = "none" if weights is None else str(weights)
        except WeightsUnavailableError as err:
            log(rt, f"{err}\n-> training from random initialisation instead")
            model = build_model(k, weights=None, aux_loss=config.aux_weight > 0, output_stride=config.output_stride)
            note = f"none ({weights} unavailable)"
    elif not config.aux_weight:
        model.aux_classifier = None  # an unused head would leave DDP waiting for its gradients
    if resume_state is not None:
        load_weights(model, resume_state["model"], Path(config.out_dir) / LAST)
    torch.manual_seed(config.seed + rt.rank)
    return model, note


@dataclass
class _Progress:
    """What the loop carries between iterations: the history, losses not yet read, the best score so far."""

    history: dict[str, Any]
    best_miou: float = -1.0
    saved: int | None = None  # iteration of the last.pt this run can vouch for
    pending: list[tuple[int, float, torch.Tensor]] = dataclasses.field(default_factory=list)
    tick: float = dataclasses.field(default_factory=time.perf_counter)
    rate: float | None = None  # img/s, smoothed, for the progress bar
    steady_images: int = 0  # trained after the first reading (which holds the loaders' start-up) ...
    steady_seconds: float = 0.0  # ... and the time they took, validation excluded


def _read_losses(progress: _Progress, rt: Runtime, config: TrainConfig) -> float:
    """Move the pending losses to the history with one device sync (and one all-reduce); return the last one.

    Raises TrainingDiverged at the first NaN or infinite loss among them; the last good checkpoint is kept.
    """
    iterations, lrs, losses = zip(*progress.pending)
    progress.pending.clear()
    values = torch.stack(losses).float()
    if rt.world_size > 1:
        dist.all_reduce(values)  # every process sees the same means, so all stop together
        values /= rt.world_size
    values = values.tolist()
    for iteration, lr, value in zip(iterations, lrs, values):
        if not math.isfinite(value):
            out_dir = Path(config.out_dir)
            kept = f"{out_dir / LAST} (iteration {progress.saved})" if progress.saved is not None else \
                "none written yet"
            if rt.main:
                write_history(out_dir, progress.history)
            raise TrainingDiverged(
                f"loss is {value} at iteration {iteration} (lr {lr:.3g}): training diverged; last good "
                f"checkpoint kept untouched: {kept}. Lower the lr or lengthen the warm-up.")
        progress.history["iter"].append(iteration)
        progress.history["loss"].append(value)
        progress.history["lr"].append(lr)
    now = time.perf_counter()
    images = len(values) * config.batch_size
    speed = images / max(now - progress.tick, 1e-9)
    if progress.rate is not None:  # the first reading holds the loaders' start-up: not the training speed
        progress.steady_images += images
        progress.steady_seconds += now - progress.tick
    progress.rate = speed if progress.rate is None else 0.7 * progress.rate + 0.3 * speed
    progress.tick = now
    return values[-1]


def _save(iteration: int, improved: bool, progress: _Progress, rt: Runtime, config: TrainConfig,
          model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler) -> None:
    """Write the run's checkpoints and history (``runs.save_run``) and remember the iteration saved."""
    save_run(iteration, improved, progress.history, progress.best_miou, rt, config, model, optimizer, scheduler,
             scaler)
    progress.saved = iteration


def _save_before_raising(iteration: int, what: str, progress: _Progress, rt: Runtime, config: TrainConfig,
                         model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                         scaler: torch.amp.GradScaler) -> None:
    """On an error between steps (a frame that fails to load, a failed validation), write last.pt at the last
    finished ``iteration`` so the error does not cost the training since the last checkpoint. One process only
    (several would wait for each other in collectives); the caller re-raises its error, which a failed save
    here does not hide."""
    if rt.world_size > 1 or iteration <= (progress.saved or 0):
        return
    try:
        if progress.pending:
            _read_losses(progress, rt, config)
        _save(iteration, False, progress, rt, config, model, optimizer, scheduler, scaler)
        log(rt, f"{what}: {Path(config.out_dir) / LAST} holds iteration {iteration}; fix it and resume")
    except Exception as err:  # TrainingDiverged, a full disk: the last good checkpoint stays as it was
        log(rt, f"{what}, and last.pt was not updated ({err})")


def _validate_into(iteration: int, progress: _Progress, net: nn.Module, val_loader: Any, rt: Runtime,
                   config: TrainConfig, show: bool | None) -> bool:
    """Score the val split, record it in the history; return whether the best mIoU improved."""
    metrics = validate(net, val_loader, rt.device, num_classes(config.label_mode), amp=rt.amp_dtype is not None,
                       channels_last=rt.fmt == torch.channels_last, progress=show)
    miou = float(metrics["miou"])
    progress.history["val_iter"].append(iteration)
    progress.history["val_miou"].append(miou)
    progress.history["val_pixel_acc"].append(float(metrics["pixel_acc"]))
    improved = miou > progress.best_miou
    progress.best_miou = max(progress.best_miou, miou)
    log(rt, f"iteration {iteration}/{config.iters}: val mIoU {100 * miou:.2f}% "
             f"(best {100 * progress.best_miou:.2f}%), pixel acc {100 * metrics['pixel_acc']:.2f}%")
    return improved


def train(config: TrainConfig | None = None, *, model: nn.Module | None = None, progress: bool | None = True,
          **overrides: Any) -> dict[str, Any]:
    """Return the training history after training DeepLabV3-ResNet50 as ``config`` says.

    History keys: ``iter``, ``loss``, ``lr`` (one entry per iteration), ``val_iter``, ``val_miou`` (fraction
    0..1), ``val_pixel_acc``, and ``weights``, ``world_size``, ``first_batch`` (the frame indices of this
    call's first batch, one list per process), ``img_per_s`` (this call's training speed after its first
    ``LOG_EVERY`` iterations, which hold the loaders' start-up; validation excluded; all processes together;
    in the returned history only). Written to ``out_dir``: ``history.json``, ``last.pt`` (every ``val_every``
    iterations and at the end) and ``best.pt`` (best val mIoU).

    ``config`` None: ``TrainConfig.from_profile(None, **overrides)``. ``model``: train this model instead of
    building one from ``config.weights`` (its weights are replaced by the checkpoint's on resume).
    ``config.resume``: continue from ``out_dir/last.pt`` (a fresh start when the folder holds no run). A fresh
    start in a folder that holds a run (``last.pt``, ``best.pt`` or ``history.json``) raises FileExistsError
    unless ``config.overwrite`` (then the old run's files are removed once the data and model are ready).
    ``out_dir`` may not be inside a dataset (``outputs.OutputError``), nor be where another live process is
    training (``runs.RunFolderBusy``): the folder is held from its first check until this call returns or raises.
    ``progress`` None: a bar on a terminal only.

    Raises TrainingDiverged when the loss is NaN or infinite (last.pt is then the last good state).
    """
    if config is None:
        config = TrainConfig.from_profile(None, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    rt = start_runtime(config)
    lock = RunLock(config.out_dir)  # taken on rank 0 by open_run or prepare_run_folder
    try:
        return _train(config, rt, model, progress, lock)
    finally:
        lock.release()  # a notebook kernel that ran this cell holds the folder no longer
        if rt.owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, rt: Runtime, model: nn.Module | None, show: bool | None,
           lock: RunLock) -> dict[str, Any]:
    # 1. Open or resume the run, each check before anything is changed: the run folder (held, and last.pt), the
    # data (every frame's headers), the model (its weights); only then is the folder made and an old run cleared.
    resume_state = open_run(config, rt, lock)
    start = int(resume_state["iteration"]) if resume_state is not None else 0
    if start >= config.iters:
        log(rt, f"{Path(config.out_dir) / LAST} is at iteration {start} of {config.iters}: the run is finished, "
                f"nothing to train; {best_text(resume_state['history'])}")
        return {**empty_history(), **resume_state["history"]}
    train_loader, val_loader = make_loaders(config, start, rt.rank, rt.world_size, rt.device)
    model, weights_note = _model_for(config, rt, model, resume_state)
    prepare_run_folder(config, rt, fresh=resume_state is None, lock=lock)

    # 2. Build: the model on its device (DDP over several processes), optimizer and schedule, scaler, loss.
    model, net = wrap(model, rt)
    optimizer, scheduler = make_optimizer(model, config)
    scaler = grad_scaler(rt.device, rt.amp_dtype)
    progress = _Progress(empty_history())
    if resume_state is not None:
        progress.history, progress.best_miou = resume_into(resume_state, rt, optimizer, scheduler, scaler)
        progress.saved = start
        log(rt, f"resumed from {os.path.relpath(Path(config.out_dir) / LAST)} at iteration {start}")
    del resume_state  # its tensors are in the model and optimizer now; free the copy
    stop = config.stop_at if config.stop_at is not None else config.iters
    criterion = make_criterion(config, train_loader.dataset.dataset, rt.device)
    progress.history.update(weights=progress.history.get("weights", weights_note), world_size=rt.world_size)

    # 3. Loop: step, log, validate, save.
    net.train()
    # show None: a bar only on a terminal (tqdm's own rule), so a log redirected to a file holds no cursor codes
    bar = tqdm(total=stop, initial=start, desc="train", unit="it", dynamic_ncols=True,
               disable=bar_disabled(show, rt.main))
    batches = iter(train_loader)
    log_lines_every = LOG_EVERY * max(1, min(10, config.iters // (10 * LOG_EVERY)))  # no bar: 10 to 100 its a line
    logged = start
    try:
        for iteration in range(start + 1, stop + 1):
            # Step.
            try:
                images, targets, indices = next(batches)
            except Exception:  # a training frame that fails to load: keep the iterations done so far
                _save_before_raising(iteration - 1, "a training batch failed to load", progress, rt, config, model,
                                     optimizer, scheduler, scaler)
                raise
            if iteration == start + 1:
                progress.history["first_batch"] = gather_indices(indices, rt)
            images, targets = to_device(images, targets, rt.device, rt.fmt)
            lr = optimizer.param_groups[0]["lr"]
            loss = train_step(net, images, targets, optimizer, scaler, criterion, config.aux_weight, rt.amp_dtype)
            scheduler.step()
            progress.pending.append((iteration, lr, loss))
            bar.update(1)

            # Log: the losses reach the host every LOG_EVERY iterations and before every checkpoint.
            at_end = iteration == stop
            checkpoint_now = bool(config.val_every and iteration % config.val_every == 0) or at_end
            if len(progress.pending) >= LOG_EVERY or checkpoint_now:
                value = _read_losses(progress, rt, config)
                bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.2e}", img_s=f"{progress.rate:.1f}", refresh=False)
                if bar.disable and show is None and iteration // log_lines_every > logged // log_lines_every:
                    logged = iteration  # a log file: a line instead of the bar
                    log(rt, f"iteration {iteration}/{stop}: loss {value:.3f}, lr {lr:.2e}, {progress.rate:.1f} img/s")

            # Validate and save: last.pt is written even when validation fails, so it never costs the training.
            if checkpoint_now:
                improved = False
                try:
                    if val_loader is not None:
                        improved = _validate_into(iteration, progress, net, val_loader, rt, config, show)
                except BaseException:
                    _save_before_raising(iteration, "validation failed", progress, rt, config, model, optimizer,
                                         scheduler, scaler)
                    raise
                _save(iteration, improved, progress, rt, config, model, optimizer, scheduler, scaler)
                progress.tick = time.perf_counter()  # validation time is not training speed
    finally:
        bar.close()

    # 4. Finish: the speed after start-up (validation excluded), then the best score.
    if progress.steady_seconds > 0:
        progress.history["img_per_s"] = round(progress.steady_images / progress.steady_seconds, 2)
    if progress.history["val_miou"]:
        log(rt, f"{best_text(progress.history)}; checkpoints in {os.path.relpath(config.out_dir)}")
    return progress.history


# ----------------------------------------------------------------------------------------------------
# Command line


def train_from_args(args: Any) -> dict[str, Any]:
    """Return the history of a run configured by the ``train`` command's arguments (unset = the profile's)."""
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    options["data_root"] = dataset_root(options.get("data_root"))
    return train(TrainConfig.from_profile(args.profile, **options), progress=None)
