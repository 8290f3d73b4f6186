"""The training engine on the synthetic set: it learns, resumes exactly, survives crashes, runs on 2 processes.

Everything runs the real DeepLabV3-ResNet50 (output stride 16, random init) on 64x128 frames, so each
iteration costs about half a second on 2 cores; runs are shared between tests through module fixtures.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seg_utils import engine, losses, stats
from seg_utils.checkpoint import load_checkpoint
from seg_utils.cityscapes import CityscapesDataset
from seg_utils.config import TrainConfig
from seg_utils.device import default_num_workers
from seg_utils.engine import TrainingDiverged, train
from seg_utils.images import DatasetError
from seg_utils.loaders import IterationSampler, make_loaders
from seg_utils.metrics import ConfusionMatrix
from seg_utils.model import build_model
from seg_utils.optim import WarmupPolyLR, make_optimizer
from seg_utils.outputs import OutputError
from seg_utils.runs import LOCK, RunFolderBusy
from seg_utils.transforms import normalize_batch

TINY = dict(iters=4, crop_size=(48, 96), batch_size=2, warmup_iters=1, val_every=2, output_stride=16,
            weights="none", num_workers=0, seed=0)


def _clone(src: Path, dst: Path) -> Path:
    # Hard links: the engine replaces files (new inodes), so the shared originals are never modified.
    return Path(shutil.copytree(src, dst, copy_function=os.link))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def config(synthetic_root) -> TrainConfig:
    return TrainConfig(data_root=synthetic_root, **TINY)


@pytest.fixture(scope="module")
def straight(config, module_tmp) -> tuple[dict, Path]:
    """4 iterations in one go (validation and last.pt at 2 and 4)."""
    out = module_tmp("straight")
    return train(config, out_dir=out, progress=False), out


@pytest.fixture(scope="module")
def half(config, module_tmp) -> Path:
    """The same run stopped after iteration 2: a folder whose last.pt is at iteration 2."""
    out = module_tmp("half")
    train(config, out_dir=out, stop_at=2, progress=False)
    return out


def test_schedule_warms_up_then_decays_to_min_lr():
    f = WarmupPolyLR(iters=100, lr=0.01, min_lr=1e-4, power=0.9, warmup_iters=10, warmup_ratio=0.1)
    lrs = [0.01 * f(i) for i in range(101)]
    assert lrs[0] == pytest.approx(0.001 * (1 - 0.0099 * 0))  # ratio x poly(0) = 0.1 x 0.01
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # rising during the warm-up
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then poly decay
    assert lrs[50] == pytest.approx((0.01 - 1e-4) * 0.5**0.9 + 1e-4)
    assert lrs[100] == pytest.approx(1e-4)


def test_sampler_shards_one_global_batch_and_restarts_anywhere():
    single = IterationSampler(10, batch_size=4, seed=3)
    ranks = [IterationSampler(10, batch_size=4, seed=3, rank=r, world_size=2) for r in range(2)]
    for i in range(7):  # crosses epoch boundaries (10 frames, 4 per batch)
        assert ranks[0].batch(i) + ranks[1].batch(i) == single.batch(i)
    first_epoch = [frame for i in range(5) for frame, _ in single.batch(i)][:10]
    assert sorted(first_epoch) == list(range(10))  # each epoch is a permutation
    resumed = iter(IterationSampler(10, batch_size=4, seed=3, start=5))
    assert next(resumed) == single.batch(5)
    with pytest.raises(ValueError, match="not divisible"):
        IterationSampler(10, batch_size=3, world_size=2)


def test_resume_gives_the_losses_of_an_uninterrupted_run(straight, half, config, tmp_path):
    history, _ = straight
    out = _clone(half, tmp_path / "run")
    first = json.loads((out / "history.json").read_text())
    assert first["iter"] == [1, 2]
    resumed = train(config, out_dir=out, resume=True, progress=False)
    assert resumed["iter"] == history["iter"] == [1, 2, 3, 4]
    assert resumed["loss"] == history["loss"]  # bit for bit: same batches, crops, dropout, optimizer state
    assert resumed["lr"] == history["lr"]
    assert resumed["val_miou"] == history["val_miou"]
    assert torch.equal(load_checkpoint(out / "last.pt")["model"]["classifier.4.weight"],
                       load_checkpoint(straight[1] / "last.pt")["model"]["classifier.4.weight"])


def test_checkpoint_loads_weights_only_and_into_build_model(straight):
    history, out = straight
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "history.json", "last.pt"]
    state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert state["iteration"] == 4
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "config", "history", "best_miou"}
    assert state["config"]["crop_size"] == [48, 96]
    assert state["history"]["loss"] == history["loss"]
    assert state["best_miou"] == max(history["val_miou"])
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert best["iteration"] == history["val_iter"][history["val_miou"].index(max(history["val_miou"]))]
    model = build_model(19, weights=out / "last.pt", output_stride=16)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["model"][key]), key
    saved = json.loads((out / "history.json").read_text())
    assert saved["val_iter"] == [2, 4] and saved["loss"] == history["loss"]


def test_crash_while_saving_leaves_last_checkpoint_intact(half, config, tmp_path, monkeypatch):
    out = _clone(half, tmp_path / "run")
    before = _digest(out / "last.pt")
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save({"partial": torch.zeros(1000)}, f)  # some bytes reach the disk, then the "disk is full"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine.torch, "save", dying_save)
    with pytest.raises(OutputError, match=r"last\.pt: writing failed: no space left on the device \(.* free in .*, "
                                          r"and a last\.pt needs about 3\d\d\.\d MB\); the previous last\.pt is kept"):
        train(config, out_dir=out, resume=True, progress=False)
    monkeypatch.undo()
    assert _digest(out / "last.pt") == before
    assert load_checkpoint(out / "last.pt")["iteration"] == 2
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(half, config, tmp_path, monkeypatch):
    out = _clone(half, tmp_path / "run")
    before = _digest(out / "last.pt")
    real_loss = engine.compute_loss

    def loss_blows_up_at_iteration_4(outputs, target, criterion, aux_weight=0.4):
        loss = real_loss(outputs, target, criterion, aux_weight)
        # iterations 3 and 4 after resuming at 2: the second one overflows
        loss_blows_up_at_iteration_4.calls += 1
        return loss * float("inf") if loss_blows_up_at_iteration_4.calls == 2 else loss

    loss_blows_up_at_iteration_4.calls = 0
    monkeypatch.setattr(engine, "compute_loss", loss_blows_up_at_iteration_4)
    with pytest.raises(TrainingDiverged, match=r"at iteration 4 .*iteration 2"):
        train(config, out_dir=out, resume=True, progress=False)
    assert _digest(out / "last.pt") == before
    assert json.loads((out / "history.json").read_text())["iter"] == [1, 2, 3]


def _majority_baseline(root: Path) -> dict:
    """Return the val metrics of predicting the most frequent train class everywhere (no learning at all)."""
    train_set, val_set = CityscapesDataset(root, "train"), CityscapesDataset(root, "val")
    counts = sum(np.bincount(train_set.load_target(i).ravel(), minlength=256) for i in range(len(train_set)))
    majority = int(np.argmax(counts[:19]))
    matrix = ConfusionMatrix(19)
    for i in range(len(val_set)):
        target = val_set.load_target(i)
        matrix.update(pred=np.full_like(target, majority), target=target)
    return matrix.compute()


def test_training_learns_the_synthetic_scenes(synthetic_root, tmp_path):
    # 4 training frames, 30 iterations from random init (about 25 s on 2 cores): the loss falls reliably and
    # the model clearly beats the majority-class predictor (mIoU about 0.02, pixel acc about 0.31 here), but
    # it is far from good: ResNet-50 from scratch needs thousands of iterations (see the demo profile).
    cfg = TrainConfig(data_root=synthetic_root, out_dir=tmp_path, **{
        **TINY, "iters": 30, "val_every": 30, "crop_size": (64, 128), "batch_size": 4, "warmup_iters": 3,
        "lr": 0.05})
    history = train(cfg, progress=False)
    loss = history["loss"]
    assert sum(loss[-5:]) / 5 < 0.6 * sum(loss[:5]) / 5, loss
    chance = _majority_baseline(synthetic_root)
    assert history["val_miou"][-1] > 2 * chance["miou"], (history["val_miou"], chance["miou"])
    assert history["val_pixel_acc"][-1] > chance["pixel_acc"] + 0.05, (history["val_pixel_acc"], chance["pixel_acc"])


def test_two_processes_with_gloo(synthetic_root, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "seg_utils", "train", "--data-root", str(synthetic_root), "--out", str(out), "--iters", "2",
           "--crop", "48x96", "--batch", "4", "--val-every", "2", "--weights", "none", "--output-stride", "16",
           "--workers", "0", "--aux-weight", "0", "--profile", "smoke"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    # output to a pipe (a log file): lines from rank 0 only, no progress bar and its cursor codes
    assert "\r" not in done.stdout + done.stderr and done.stdout.count("iteration 2/2: val mIoU") == 1, done.stdout
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    history = json.loads((out / "history.json").read_text())
    assert history["world_size"] == 2 and history["iter"] == [1, 2]
    rank0, rank1 = history["first_batch"]
    assert len(rank0) == len(rank1) == 2  # per-process batch = total / 2
    assert not set(rank0) & set(rank1)  # the two processes trained on different frames
    state = load_checkpoint(out / "last.pt")
    assert state["iteration"] == 2 and len(state["rng"]) == 2
    assert not any(k.startswith("module.") for k in state["model"])
    # aux_weight 0 builds no aux head: with one, DDP would wait for its gradients and fail at iteration 2
    assert not any(k.startswith("aux_classifier.") for k in state["model"])


def test_a_fresh_start_never_silently_replaces_a_run(half, config, tmp_path):
    out = _clone(half, tmp_path / "run")
    before = _digest(out / "last.pt")
    with pytest.raises(FileExistsError, match=r"holds a run \(last\.pt, best\.pt, history\.json\): pass resume=True .* "
                                              r"or overwrite=True"):
        train(config, out_dir=out, progress=False)
    assert _digest(out / "last.pt") == before
    history = train(config, out_dir=out, overwrite=True, stop_at=1, val_every=0, progress=False)
    assert history["iter"] == [1]  # started again from iteration 0, not resumed from 2
    assert load_checkpoint(out / "last.pt")["iteration"] == 1
    assert load_checkpoint(out / "best.pt")["iteration"] == 1  # scored at the stop; not the old run's best


# A process holding a run folder as train() does, with a forked child (a DataLoader worker) alive beside it.
_HOLD = """
import os, sys, time
from seg_utils.runs import RunLock
RunLock(sys.argv[1]).acquire()
child = os.fork()
if child == 0:
    time.sleep(300)
    os._exit(0)
print(child, flush=True)
time.sleep(300)
"""


def test_one_process_trains_in_a_run_folder_and_a_killed_one_never_blocks_the_next(half, config, tmp_path):
    out = _clone(half, tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(holder.stdout.readline())
        before = {p.name: _digest(p) for p in out.iterdir()}
        with pytest.raises(RunFolderBusy, match=f"^{re.escape(str(out))}: another process \\(pid {holder.pid} on "
                                                f"host .*\\) is training in this run folder; wait for it to finish"):
            train(config, out_dir=out, resume=True, progress=False)  # a notebook's train() beside a terminal's
        assert {p.name: _digest(p) for p in out.iterdir()} == before
        holder.kill()  # kill -9: the lock goes with the process (its forked child lives on)
        holder.wait()
        history = train(config, out_dir=out, resume=True, stop_at=3, val_every=0, progress=False)
        assert history["iter"][-1] == 3 and load_checkpoint(out / "last.pt")["iteration"] == 3
        assert not (out / LOCK).exists()  # let go when train() returned: the next cell may train here
    finally:
        holder.kill()
        holder.wait()
        if child is not None:
            os.kill(child, signal.SIGKILL)


def test_full_profile_is_schedule_80k_and_short_runs_shorten_a_warm_up():
    full = TrainConfig.from_profile("full")
    assert (full.iters, full.batch_size, full.crop_size, full.lr, full.min_lr, full.power) == \
        (80_000, 8, (512, 1024), 0.01, 1e-4, 0.9)
    assert full.warmup_iters == 0 and WarmupPolyLR(full.iters, full.lr, warmup_iters=0)(0) == 1.0  # no warm-up
    assert full.cat_max_ratio == 0.75 and full.aux_weight == 0.4
    assert TrainConfig.from_profile("demo").warmup_iters == 10  # from random weights: a short warm-up
    assert TrainConfig.from_profile("demo", iters=50).warmup_iters == 5  # at most a tenth of a short run
    assert TrainConfig.from_profile("demo", iters=50, warmup_iters=3).warmup_iters == 3
    with pytest.raises(ValueError, match="warmup_iters must be in 0..iters-1"):
        TrainConfig.from_profile("full", iters=500, warmup_iters=500)


def test_an_all_ignored_batch_has_zero_loss_and_gradient():
    logits = torch.randn(2, 19, 8, 8, requires_grad=True)
    aux = torch.randn(2, 19, 8, 8, requires_grad=True)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    void = torch.full((2, 8, 8), 255)
    loss = losses.compute_loss({"out": logits, "aux": aux}, void, criterion)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits)) and torch.equal(aux.grad, torch.zeros_like(aux))
    target = void.clone()
    target[0, 0, 0] = 3  # one labelled pixel: the usual mean cross-entropy
    expected = criterion(logits, target) + 0.4 * criterion(aux, target)
    torch.testing.assert_close(losses.compute_loss({"out": logits, "aux": aux}, target, criterion), expected)


def test_loaders_send_uint8_batches(config):
    train_loader, val_loader = make_loaders(config)
    images, targets, _ = next(iter(train_loader))
    (h, w), b = config.crop_size, config.batch_size
    assert images.dtype == targets.dtype == torch.uint8
    assert images.shape == (b, 3, h, w) and targets.shape == (b, h, w)
    # 4 bytes a pixel through shared memory and the host-to-device copy, not 20 (float32 image + int64 label)
    assert images.nbytes + targets.nbytes == 4 * b * h * w
    image, target = next(iter(val_loader))
    assert image.dtype == target.dtype == torch.uint8 and image.shape[1] == 3


@pytest.mark.parametrize(("cores", "processes", "expected"), [
    (2, 1, 0), (4, 1, 2), (16, 1, 14), (16, 2, 6), (96, 8, 10), (8, 8, 0), (64, 1, 16)])
def test_workers_follow_cores_and_processes(cores, processes, expected):
    assert default_num_workers(processes, cores) == expected


def test_two_workers_train_the_very_same_run(straight, config, tmp_path):
    # Worker processes, persistent workers, prefetching: the crops depend on (seed, iteration, slot) only.
    history = train(config, out_dir=tmp_path, num_workers=2, stop_at=2, progress=False)
    assert history["loss"] == straight[0]["loss"][:2]


def test_validation_skips_the_aux_head_and_normalises_uint8_on_the_device(synthetic_root):
    torch.manual_seed(0)
    model = build_model(19, weights=None, output_stride=16).train()
    calls = []
    model.aux_classifier.register_forward_hook(lambda *args: calls.append(1))
    loader = torch.utils.data.DataLoader(CityscapesDataset(synthetic_root, "val"), batch_size=1)
    assert next(iter(loader))[0].dtype == torch.uint8
    from_uint8 = engine.validate(model, loader, "cpu")
    from_float = engine.validate(model, [(normalize_batch(image), target) for image, target in loader], "cpu")
    assert calls == [] and model.aux_classifier is not None and model.training
    np.testing.assert_array_equal(from_uint8["matrix"], from_float["matrix"])


def test_a_killed_save_leaves_no_temporary_behind(half, config, tmp_path):
    out = _clone(half, tmp_path / "run")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".last.pt.{int(dead.stdout)}.tmp"  # what a save killed half-way leaves
    live = out / f".last.pt.{os.getppid()}.tmp"  # another process still writing: not ours to remove
    other = out / f".notes.txt.{int(dead.stdout)}.tmp"  # the same pattern, but not a file of the run: kept
    for path in (stale, live, other):
        path.write_bytes(b"\0" * 1000)
    train(config, out_dir=out, resume=True, stop_at=3, val_every=0, progress=False)
    assert not stale.exists() and live.exists() and other.exists()


def test_a_failed_validation_still_keeps_the_training(half, config, tmp_path):
    # A val image whose header is fine but whose pixels are cut off passes the start-up check and fails only when
    # validation decodes it: last.pt must hold the iterations trained before that.
    data = Path(shutil.copytree(config.data_root, tmp_path / "data"))
    image = CityscapesDataset(data, "val").samples[-1].image_path
    image.write_bytes(image.read_bytes()[:200])
    out = _clone(half, tmp_path / "run")
    with pytest.raises(DatasetError, match=f"{image.name}: truncated or corrupt image"):
        train(config, data_root=data, out_dir=out, resume=True, progress=False)
    assert load_checkpoint(out / "last.pt")["iteration"] == 4  # not 2: the two iterations are kept
    assert load_checkpoint(out / "best.pt")["iteration"] == 2  # and no score was invented for them


def test_a_broken_frame_stops_the_run_before_it_starts_and_before_overwrite_clears_anything(half, config,
                                                                                               tmp_path):
    data = Path(shutil.copytree(config.data_root, tmp_path / "data"))
    label = CityscapesDataset(data, "val").samples[0].label_path
    label.write_bytes(b"not a png")
    out = _clone(half, tmp_path / "run")
    before = {p.name: _digest(p) for p in out.iterdir()}
    with pytest.raises(DatasetError, match=f"{label.name}: unreadable or corrupt image header"):
        train(config, data_root=data, out_dir=out, overwrite=True, progress=False)
    assert {p.name: _digest(p) for p in out.iterdir()} == before  # the old run is still there


def test_overwrite_never_removes_the_weights_it_starts_from(half, config, tmp_path):
    # --overwrite --weights OUT/best.pt would remove the very file the run starts from: refused, nothing removed
    out = _clone(half, tmp_path / "run")
    before = {p.name: _digest(p) for p in out.iterdir()}
    with pytest.raises(OutputError, match=r"best\.pt: --weights is a file of the run .* that --overwrite would remove"):
        train(config, out_dir=out, overwrite=True, weights=str(out / "best.pt"), progress=False)
    assert {p.name: _digest(p) for p in out.iterdir()} == before


def test_a_training_frame_that_fails_to_load_keeps_the_iterations_before_it(half, config, tmp_path):
    data = Path(shutil.copytree(config.data_root, tmp_path / "data"))
    train_set = CityscapesDataset(data, "train")
    # iteration i trains on batch i - 1 of the sampler: break a frame of iteration 4 only (3 is the other half of
    # the same epoch), with its header intact so the start-up check passes
    (frame, _), _ = IterationSampler(len(train_set), config.batch_size, config.seed).batch(3)
    image = train_set.samples[frame].image_path
    image.write_bytes(image.read_bytes()[:200])
    out = _clone(half, tmp_path / "run")
    with pytest.raises(DatasetError, match=f"{image.name}: truncated or corrupt image"):
        train(config, data_root=data, out_dir=out, resume=True, progress=False)
    assert load_checkpoint(out / "last.pt")["iteration"] == 3


def test_resuming_a_finished_run_says_so(straight, config, tmp_path, capsys):
    _, done = straight
    out = _clone(done, tmp_path / "run")
    capsys.readouterr()
    history = train(config, out_dir=out, resume=True, progress=False)
    assert history["iter"] == [1, 2, 3, 4]
    said = capsys.readouterr().out
    assert "is at iteration 4 of 4: the run is finished, nothing to train; best val mIoU" in said, said


@pytest.mark.parametrize("field, value", [("lr", float("nan")), ("lr", float("inf")), ("lr", 0.0),
                                          ("momentum", 1.0), ("scale_range", (2.0, 0.5)), ("min_lr", 0.1)])
def test_bad_numbers_name_their_setting(field, value):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("field, value", [("optimizer", "adam"), ("class_weights", "inverse")])
def test_bad_choices_name_their_setting(field, value):
    with pytest.raises(ValueError, match=f"^{field} must be"):
        TrainConfig(**{field: value})


def test_class_weights_are_inverse_square_roots_of_the_pixel_shares(synthetic_root):
    train_set = CityscapesDataset(synthetic_root, "train")
    counts = stats.count_class_pixels(train_set)
    by_hand = np.zeros(19, dtype=np.int64)
    for i in range(len(train_set)):
        target = train_set.load_target(i)
        by_hand += np.bincount(target[target != 255], minlength=19)
    assert (counts == by_hand).all() and counts[0] > 0  # road is there
    weights = losses.sqrt_inv_freq_weights(counts).numpy()
    present = counts > 0
    assert np.median(weights[present]) == pytest.approx(1.0)
    a, b = np.flatnonzero(present)[:2]
    assert weights[a] / weights[b] == pytest.approx(np.sqrt(counts[b] / counts[a]), rel=1e-5)
    assert weights[0] < 1 and (weights[~present] == 1).all()  # the commonest class weighs least; absent ones 1
    config = TrainConfig(data_root=synthetic_root, class_weights="sqrt_inv_freq", **TINY)
    assert torch.equal(losses.make_criterion(config, counts).weight, torch.tensor(weights))
    assert losses.make_criterion(TrainConfig(**TINY)).weight is None  # the recipe: no weights


def test_adamw_follows_the_same_schedule():
    model = torch.nn.Linear(2, 2)
    config = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.01, iters=100, warmup_iters=10)
    optimizer, scheduler = make_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["weight_decay"] == 0.01
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * config.warmup_ratio)  # the warm-up's start
    sgd, _ = make_optimizer(model, TrainConfig())
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    assert optimizer.defaults["fused"] and sgd.defaults["fused"]  # torch's one-pass kernels on a CPU


def test_class_pixels_are_counted_once_per_set_of_label_files(dataset_copy, monkeypatch):
    train_set = CityscapesDataset(dataset_copy, "train")
    first = stats.class_pixel_counts(train_set)
    assert (first == stats.count_class_pixels(train_set)).all()
    cached = list((Path(os.environ["SEG_WORKSPACE"]) / "cache" / "class-counts").glob("*.json"))
    assert cached and all(dataset_copy not in p.parents for p in cached)  # nothing written into the dataset
    decoded = []
    monkeypatch.setattr(stats, "count_class_pixels", lambda *a: decoded.append(1) or np.zeros(19, np.int64))
    assert (stats.class_pixel_counts(CityscapesDataset(dataset_copy, "train")) == first).all() and not decoded
    # a label file that changes is counted afresh
    label = train_set.samples[0].target_path(train_set.label_mode)
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    stats.class_pixel_counts(CityscapesDataset(dataset_copy, "train"))
    assert decoded == [1]
