"""Training and validation: the iteration-based recipe of mmsegmentation, on one CPU, one GPU or many.

``train_step`` is one optimisation step (forward under autocast, loss with the aux term, backward, step);
``validate(model, loader, device)`` scores a model with one confusion matrix over a split; ``train(config)`` runs
the whole loop and returns the history (loss and lr per iteration, val mIoU every ``val_every``). It reads top to
bottom: open or resume the run (``runs``), build the loaders (``loaders``), model, optimizer (``optim``) and loss
(``losses``), gather them in one ``runs.RunState``, then loop: step, log, validate, save. The recipe and the
profiles are in ``config``. SIGTERM or SIGINT (a scheduler's stop, Ctrl-C) ends the loop after the step it is in,
with last.pt written (``signals``).

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
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .cityscapes import dataset_root
from .classes import ClassTable
from .config import TrainConfig
from .device import autocast, grad_scaler, to_device
from .distributed import Runtime, gather_indices, log, on_rank0, start_runtime, wrap
from .labels import IGNORE_INDEX
from .layouts import open_layout
from .loaders import make_loaders, raise_error
from .losses import compute_loss, make_criterion
from .metrics import ConfusionMatrix
from .model import WEIGHT_NAMES, WeightsUnavailableError, build_model, fine_tune_from
from .model_info import ModelInfo
from .optim import make_optimizer
from .outputs import bar_disabled
from .rng import seed_everything
from .runs import (
    HISTORY,
    LAST,
    RunLock,
    RunState,
    best_text,
    empty_history,
    open_run,
    prepare_run_folder,
    save_run,
    write_history,
)
from .signals import StopRequests, TrainingInterrupted, stop_requests
from .stats import class_pixel_counts

__all__ = ["TrainingDiverged", "TrainingInterrupted", "Throughput", "train_step", "validate", "train"]

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
             num_classes: int = 19, dtype: torch.dtype | None = None,
             fmt: torch.memory_format = torch.contiguous_format, main: bool = True,
             progress: bool | None = False, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Return the metrics dict of ``ConfusionMatrix.compute()`` (``miou``, ``iou``, ``pixel_acc`` ...) of
    ``model`` on ``loader``'s (image, target) batches, summed over all processes under torch.distributed.

    Images may be normalised float or uint8 (normalised on the device). Logits are upsampled to the label's
    size before the argmax, so labels stay at native resolution (batch 1 of full frames). ``dtype``: the
    autocast dtype (None: float32; ``device.resolve_amp`` gives a run's); ``fmt``: the images' memory format;
    ``main``: whether this process shows the progress bar. The aux head is skipped; the model's train/eval mode
    is restored afterwards. ``class_names``: the names in the metrics (None: Cityscapes' by class count).
    """
    device = torch.device(device)
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    was_training = net.training
    net.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX, device=device, class_names=class_names)
    try:
        with _without_aux(net):
            for batch in tqdm(loader, desc="validate", leave=False, disable=bar_disabled(progress, main)):
                batch = raise_error(batch)  # a frame that cannot be read: its own one-line DatasetError
                image, target = to_device(batch[0], batch[1], device, fmt)
                with autocast(device, dtype):
                    logits = net(image)["out"]
                if logits.shape[-2:] != target.shape[-2:]:
                    logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear",
                                           align_corners=False)
                matrix.update(pred=logits.argmax(1), target=target)
    finally:
        net.train(was_training)
    return matrix.reduce().compute()


# ----------------------------------------------------------------------------------------------------
# The loop's pieces


def _build_model(config: TrainConfig, rt: Runtime, resuming: bool, table: ClassTable) -> tuple[nn.Module, str]:
    """Return the model ``config.weights`` names for the classes of ``table`` (random weights on a resume: the
    checkpoint's replace them) and where its weights come from. A checkpoint of this project is fine-tuned:
    ``model.fine_tune_from`` says in one line what it loaded, replaced and kept by name."""
    k = len(table)
    weights = None if resuming else config.weights
    if weights is not None and str(weights).lower() not in WEIGHT_NAMES:
        model, note = fine_tune_from(weights, table, aux_loss=config.aux_weight > 0,
                                     output_stride=config.output_stride)
        log(rt, note)
        return model, str(weights)
    try:
        model = build_model(k, weights=weights, aux_loss=config.aux_weight > 0, output_stride=config.output_stride)
        return model, "none" if weights is None else str(weights)
    except WeightsUnavailableError as err:
        log(rt, f"{err}\n-> training from random initialisation instead")
        model = build_model(k, weights=None, aux_loss=config.aux_weight > 0, output_stride=config.output_stride)
        return model, f"none ({weights} unavailable)"


def _flush(pending: list[tuple[int, float, torch.Tensor]], rt: Runtime, stop: bool = False
           ) -> tuple[list[tuple[int, float, float]], bool]:
    """Return the pending (iteration, lr, loss on the device) as (iteration, lr, loss) numbers, with one device
    sync (and, over several processes, one all-reduce: every process sees the same means), and whether any
    process asked to ``stop``; empty ``pending``."""
    iterations, lrs, losses = zip(*pending)
    pending.clear()
    values = torch.stack([*losses, torch.tensor(float(stop), device=losses[0].device)]).float()
    if rt.world_size > 1:
        dist.all_reduce(values)
        values[:-1] /= rt.world_size
    *values, stopped = values.tolist()
    return list(zip(iterations, lrs, values)), stopped > 0


def _agree(stop: StopRequests, rt: Runtime) -> bool:
    """Return whether any process received a stop signal (one all-reduce over several processes)."""
    if rt.world_size == 1:
        return stop.requested
    flag = torch.tensor(float(stop.requested), device=rt.device)
    dist.all_reduce(flag)
    return bool(flag.item() > 0)


def _record(run: RunState, readings: list[tuple[int, float, float]], saved: int | None) -> TrainingDiverged | None:
    """Append the readings (iteration, lr, loss) to the run's history up to the first NaN or infinite loss; return
    the error for that one, naming the last good checkpoint (None: every loss finite)."""
    for iteration, lr, value in readings:
        if not math.isfinite(value):
            last = Path(run.config.out_dir) / LAST
            kept = f"{last} (iteration {saved})" if saved is not None else "none written yet"
            return TrainingDiverged(f"loss is {value} at iteration {iteration} (lr {lr:.3g}): training diverged; "
                                    f"last good checkpoint kept untouched: {kept}. Lower the lr or lengthen the "
                                    f"warm-up.")
        run.history["iter"].append(iteration)
        run.history["loss"].append(value)
        run.history["lr"].append(lr)
    return None


class Throughput:
    """Images per second: smoothed for the progress bar (``rate``), and over the whole run after the first reading
    (which holds the loaders' start-up), validation excluded (``steady``)."""

    def __init__(self) -> None:
        self.tick = time.perf_counter()
        self.rate: float | None = None
        self.images, self.seconds = 0, 0.0

    def update(self, images: int) -> float:
        """Count ``images`` trained since the last call (or ``pause``); return the smoothed rate."""
        now = time.perf_counter()
        elapsed, self.tick = now - self.tick, now
        speed = images / max(elapsed, 1e-9)
        if self.rate is not None:
            self.images += images
            self.seconds += elapsed
        self.rate = speed if self.rate is None else 0.7 * self.rate + 0.3 * speed
        return self.rate

    def pause(self) -> None:
        """Leave out the time since the last update (validation, a checkpoint write)."""
        self.tick = time.perf_counter()

    @property
    def steady(self) -> float | None:
        return round(self.images / self.seconds, 2) if self.seconds > 0 else None


def _save_before_raising(run: RunState, rt: Runtime, iteration: int, saved: int | None,
                         pending: list[tuple[int, float, torch.Tensor]], what: str) -> None:
    """On an error between steps (a frame that fails to load, a failed validation), write last.pt at the last
    finished ``iteration`` so the error does not cost the training since the last checkpoint. One process only
    (several would wait for each other in collectives); the caller re-raises its error, which a failed save
    here does not hide."""
    if rt.world_size > 1 or iteration <= (saved or 0):
        return
    try:
        if pending:
            readings, _ = _flush(pending, rt)
            error = _record(run, readings, saved)
            if error is not None:
                raise error
        run.iteration = iteration
        save_run(run, rt)
        log(rt, f"{what}: {Path(run.config.out_dir) / LAST} holds iteration {iteration}; fix it and resume")
    except Exception as err:  # TrainingDiverged, a full disk: the last good checkpoint stays as it was
        log(rt, f"{what}, and last.pt was not updated ({err})")


def _validate_into(run: RunState, net: nn.Module, val_loader: Any, rt: Runtime, show: bool | None) -> bool:
    """Score the val split, record it in the history; return whether the best mIoU improved."""
    metrics = validate(net, val_loader, rt.device, len(run.info.classes), dtype=rt.amp_dtype, fmt=rt.fmt, main=rt.main,
                       progress=show, class_names=run.info.classes.names)
    miou = float(metrics["miou"])
    run.history["val_iter"].append(run.iteration)
    run.history["val_miou"].append(miou)
    run.history["val_pixel_acc"].append(float(metrics["pixel_acc"]))
    improved = miou > run.best_miou
    run.best_miou = max(run.best_miou, miou)
    log(rt, f"iteration {run.iteration}/{run.config.iters}: val mIoU {100 * miou:.2f}% "
            f"(best {100 * run.best_miou:.2f}%), pixel acc {100 * metrics['pixel_acc']:.2f}%")
    return improved


# ----------------------------------------------------------------------------------------------------
# The loop


def train(config: TrainConfig | None = None, *, model: nn.Module | None = None, progress: bool | None = True,
          **overrides: Any) -> dict[str, Any]:
    """Return the training history after training DeepLabV3-ResNet50 as ``config`` says.

    History keys: ``iter``, ``loss``, ``lr`` (one entry per iteration), ``val_iter``, ``val_miou`` (fraction
    0..1), ``val_pixel_acc``, and ``weights``, ``world_size``, ``first_batch`` (the frame indices of this
    call's first batch, one list per process), ``img_per_s`` (this call's training speed after its first
    ``LOG_EVERY`` iterations, which hold the loaders' start-up; validation excluded; all processes together;
    in the returned history only). Written to ``out_dir``: ``history.json``, ``last.pt`` (every ``val_every``
    iterations and at the end) and ``best.pt`` (best val mIoU).

    ``config`` None: ``TrainConfig.from_profile(None, **overrides)``. ``config.data_root`` None: the dataset
    ``CITYSCAPES_DATASET`` names (``cityscapes.dataset_root``). ``model``: train this model instead of building one from
    ``config.weights`` (its weights are replaced by the checkpoint's on resume).
    ``config.resume``: continue from ``out_dir/last.pt`` (a fresh start when the folder holds no run). A fresh
    start in a folder that holds a run (``last.pt``, ``best.pt`` or ``history.json``) raises FileExistsError
    unless ``config.overwrite`` (then the old run's files are removed once the data and model are ready).
    ``out_dir`` may not be inside a dataset (``outputs.OutputError``), nor be where another live process is
    training (``runs.RunFolderBusy``): the folder is held from its first check until this call returns or raises.
    ``progress`` None: a bar on a terminal only.

    Raises TrainingDiverged when the loss is NaN or infinite (last.pt is then the last good state), and
    TrainingInterrupted on SIGTERM or SIGINT, after finishing the step and writing last.pt (``signals``).
    """
    if config is None:
        config = TrainConfig.from_profile(None, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    config = dataclasses.replace(config, data_root=dataset_root(config.data_root))  # resolved once, here
    rt = start_runtime(config)
    lock = RunLock(config.out_dir)  # taken on rank 0 by open_run or prepare_run_folder
    try:
        with stop_requests() as stop:
            return _train(config, rt, model, progress, lock, stop)
    finally:
        lock.release()  # a notebook kernel that ran this cell holds the folder no longer
        if rt.owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, rt: Runtime, model: nn.Module | None, show: bool | None, lock: RunLock,
           stop: StopRequests) -> dict[str, Any]:
    # 1. Open or resume the run, each check before anything is changed: the data's layout and classes, the run
    # folder (held, and last.pt), every frame's headers, the model (its weights); only then is the folder made and an
    # old run cleared.
    layout = open_layout(config.data_root, config.classes, config.label_mode)  # Cityscapes, or a plain folder
    table = layout.table
    resume = open_run(config, rt, table, lock)
    start = int(resume["iteration"]) if resume is not None else 0
    if start >= config.iters:
        log(rt, f"{Path(config.out_dir) / LAST} is at iteration {start} of {config.iters}: the run is finished, "
                f"nothing to train; {best_text(resume['history'])}")
        return {**empty_history(), **resume["history"]}
    train_loader, val_loader = make_loaders(config, start, rt.rank, rt.world_size, rt.device, layout)
    counts = None
    if config.class_weights:  # pixels per class of the train split: decoded once, then cached (stats)
        counts = on_rank0(rt, lambda: class_pixel_counts(layout.dataset("train"), len(table)))
    seed_everything(config.seed)  # the same initial weights on every process (DDP broadcasts rank 0's anyway)
    if model is None:
        model, weights_note = _build_model(config, rt, resuming=resume is not None, table=table)
    else:
        weights_note = "given model"
        if not config.aux_weight:
            model.aux_classifier = None  # an unused head would leave DDP waiting for its gradients
    torch.manual_seed(config.seed + rt.rank)  # then each process its own dropout stream
    prepare_run_folder(config, rt, fresh=resume is None, lock=lock)

    # 2. Build: the model on its device (DDP over several processes), optimizer and schedule, scaler, loss; then
    # the run's state in one object, restored from last.pt on a resume.
    net_info = ModelInfo(table, layout.frame_size(), tuple(config.scale_range), config.output_stride)
    model.info = net_info  # what the checkpoints record of it
    model, net = wrap(model, rt)
    optimizer, scheduler = make_optimizer(model, config)
    run = RunState(config, model, optimizer, scheduler, grad_scaler(rt.device, rt.amp_dtype), info=net_info)
    if resume is not None:
        run.load_state_dict(resume, rt.rank, Path(config.out_dir) / LAST)
        log(rt, f"resumed from {os.path.relpath(Path(config.out_dir) / LAST)} at iteration {start}")
    del resume  # its tensors are in the model and optimizer now; free the copy
    saved = start if start else None  # the iteration of the last.pt this run can vouch for
    criterion = make_criterion(config, counts, rt.device)
    run.history.update(weights=run.history.get("weights", weights_note), world_size=rt.world_size)
    stop_at = config.stop_at if config.stop_at is not None else config.iters

    # 3. Loop: step, log, validate, save; on a stop signal, save and stop.
    net.train()
    # show None: a bar only on a terminal (tqdm's own rule), so a log redirected to a file holds no cursor codes
    bar = tqdm(total=stop_at, initial=start, desc="train", unit="it", dynamic_ncols=True,
               disable=bar_disabled(show, rt.main))
    batches = iter(train_loader)
    pending: list[tuple[int, float, torch.Tensor]] = []  # losses still on the device
    meter = Throughput()
    log_lines_every = LOG_EVERY * max(1, min(10, config.iters // (10 * LOG_EVERY)))  # no bar: 10 to 100 its a line
    logged, stopping = start, False
    try:
        for iteration in range(start + 1, stop_at + 1):
            # Step.
            try:
                images, targets, indices = raise_error(next(batches))
            except Exception:  # a training frame that fails to load: keep the iterations done so far
                _save_before_raising(run, rt, iteration - 1, saved, pending, "a training batch failed to load")
                raise
            if iteration == start + 1:
                run.history["first_batch"] = gather_indices(indices, rt)
            images, targets = to_device(images, targets, rt.device, rt.fmt)
            lr = optimizer.param_groups[0]["lr"]
            loss = train_step(net, images, targets, optimizer, scaler=run.scaler, criterion=criterion,
                              aux_weight=config.aux_weight, amp_dtype=rt.amp_dtype)
            scheduler.step()
            run.iteration = iteration
            pending.append((iteration, lr, loss))
            bar.update(1)

            # Log: the losses reach the host every LOG_EVERY iterations, before every checkpoint, and (one
            # process) when a stop signal came; over several processes they agree on stopping at a reading.
            at_end = iteration == stop_at
            checkpoint_now = bool(config.val_every and iteration % config.val_every == 0) or at_end
            if len(pending) >= LOG_EVERY or checkpoint_now or (rt.world_size == 1 and stop.requested):
                readings, stopping = _flush(pending, rt, stop.requested)
                error = _record(run, readings, saved)
                if error is not None:  # the history up to it is written; last.pt stays the last good state
                    if rt.main:
                        write_history(Path(config.out_dir), run.history)
                    raise error
                rate = meter.update(len(readings) * config.batch_size)
                value = readings[-1][2]
                bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}", refresh=False)
                if bar.disable and show is None and iteration // log_lines_every > logged // log_lines_every:
                    logged = iteration  # a log file: a line instead of the bar
                    log(rt, f"iteration {iteration}/{stop_at}: loss {value:.3f}, lr {lr:.2e}, {rate:.1f} img/s")

            # Validate and save: last.pt is written even when validation fails, so it never costs the training.
            if checkpoint_now:
                improved = False
                try:
                    if val_loader is not None:
                        improved = _validate_into(run, net, val_loader, rt, show)
                except BaseException:
                    _save_before_raising(run, rt, iteration, saved, pending, "validation failed")
                    raise
                save_run(run, rt, improved)
                saved = iteration
                meter.pause()  # validation time is not training speed
                stopping = stopping or _agree(stop, rt)  # a signal during validation or the write: stop now
            if stopping:
                if saved != iteration:
                    save_run(run, rt)
                    saved = iteration
                where = os.path.relpath(Path(config.out_dir))
                message = (f"stopped by {stop.name} after iteration {iteration}/{config.iters}: {where}/{LAST} and "
                           f"{HISTORY} hold it; continue with the same command and --resume (resume=True)")
                log(rt, message)
                raise TrainingInterrupted(message, stop.signum or signal.SIGTERM)
    finally:
        bar.close()

    # 4. Finish: the speed after start-up (validation excluded), then the best score.
    if meter.steady is not None:
        run.history["img_per_s"] = meter.steady
    if run.history["val_miou"]:
        log(rt, f"{best_text(run.history)}; checkpoints in {os.path.relpath(config.out_dir)}")
    return run.history
