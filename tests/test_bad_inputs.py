"""Bad input, tried as a new user would: each case runs ``python -m seg_utils`` as a subprocess in a sandbox of its
own (a copy of the synthetic set, predictions, checkpoints) and must end with exit code 1 (2 for argparse's usage
errors), exactly one line on stderr that names the file, no traceback, and no file changed, added or removed
anywhere in the sandbox (a checksum of every file before and after).

The cases run a few at a time (each one mostly waits for ``import torch``); each is still its own test.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import resource
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from seg_utils.checkpoint import CHECKPOINT_FORMAT
from seg_utils.cityscapes import find_samples
from seg_utils.config import TrainConfig
from seg_utils.engine import train
from seg_utils.images import read_label
from seg_utils.labels import label_ids_to_train_ids, train_ids_to_label_ids
from seg_utils.model import build_model
from seg_utils.runs import RunLock
from seg_utils.synthetic import write_synthetic_folder

# a tiny run: every case that trains fails long before the first step would matter
RUN = ["--crop", "48x96", "--batch", "2", "--weights", "none", "--profile", "smoke", "--workers", "0",
       "--val-every", "2", "--warmup-iters", "1", "--output-stride", "16", "--seed", "0"]
MARKER = "hostile-pickle-ran"
HOLDERS: list[RunLock] = []  # run folders this test process holds while a case's command runs (released at the end)

PHOTO_TYPES = ".png, .jpg, .jpeg, .bmp, .tif, .tiff or .webp"  # the photo suffixes, as errors list them


class _Hostile:
    """Unpickling this runs a shell command: a checkpoint that must be refused unrun."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@dataclass
class Sandbox:
    """One case's folder: ``D`` a copy of the synthetic set, ``P`` perfect predictions of its val split."""

    root: Path
    shared: dict[str, Path]

    @property
    def D(self) -> Path:  # noqa: N802 (the name the issue uses)
        return self.root / "cityscapes"

    @property
    def P(self) -> Path:  # noqa: N802
        return self.root / "preds"

    @property
    def F(self) -> Path:  # noqa: N802
        """A plain folder of your own: the sidewalk stand-in (colour masks, 6 classes), tiny."""
        return self.root / "own"

    def own(self, split: str = "train", i: int = 0) -> tuple[Path, Path]:
        """Return (photo, mask) of a frame of ``F``."""
        photo = sorted((self.F / "images" / split).iterdir())[i]
        return photo, self.F / "masks" / split / f"{photo.stem}.png"

    def link(self, name: str, to: Path) -> Path:
        """Hard-link a shared file (a checkpoint) into the sandbox under ``to``."""
        to.parent.mkdir(parents=True, exist_ok=True)
        os.link(self.shared[name], to)
        return to

    def val_label(self) -> Path:
        return find_samples(self.D, "val")[0].label_path


@dataclass
class Case:
    name: str
    prepare: Callable[[Sandbox], tuple[list[str], str]]  # -> (arguments, text the error line must hold)
    code: int = 1
    env: dict[str, str] = field(default_factory=dict)
    limit_file_size: int | None = None  # bytes: RLIMIT_FSIZE, to make a disk "full"
    cwd: str | None = None  # relative to the sandbox


def _digests(root: Path) -> dict[str, object]:
    """Every file under ``root``: its SHA-256, or for a big file (a linked checkpoint) its inode, size and
    modification time, which any write or replacement changes."""
    out: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            if path.is_symlink() and path.is_dir():
                out[rel] = ("link", os.readlink(path))
                continue
            stat = path.stat()
            out[rel] = (stat.st_ino, stat.st_size, stat.st_mtime_ns) if stat.st_size > 1 << 20 else \
                hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------------------------------------
# The cases


def _evaluate(sb: Sandbox, *extra: str) -> list[str]:
    return ["evaluate", "--data-root", str(sb.D), "--predictions", str(sb.P), *extra]


def _train(sb: Sandbox, out: Path | str, *extra: str, iters: str = "2") -> list[str]:
    return ["train", "--data-root", str(sb.D), "--out", str(out), "--iters", iters, *RUN, *extra]


def json_onto_ground_truth(sb):
    gt = sb.val_label()
    return _evaluate(sb, "--json", str(gt)), f"{gt}: inside the dataset folder"


def json_new_file_in_dataset(sb):
    return _evaluate(sb, "--json", str(sb.D / "scores.json")), "scores.json: inside the dataset folder"


def json_through_a_symlink(sb):
    (sb.root / "link").symlink_to(sb.D / "gtFine")
    return _evaluate(sb, "--json", str(sb.root / "link" / "scores.json")), "link/scores.json: inside the dataset"


def json_relative_into_dataset(sb):
    return _evaluate(sb, "--json", "../cityscapes/gtFine/scores.json"), "scores.json: inside the dataset"


def json_onto_a_folder(sb):
    (sb.root / "scores").mkdir()
    return _evaluate(sb, "--json", str(sb.root / "scores")), "scores: is a folder"


def json_onto_an_existing_file(sb):
    (sb.root / "scores.json").write_text("{}\n")
    return _evaluate(sb, "--json", str(sb.root / "scores.json")), "scores.json exists; pass --overwrite"


def json_onto_a_prediction(sb):
    pred = next(sb.P.rglob("*.png"))
    return _evaluate(sb, "--json", str(pred), "--overwrite"), f"{pred}: an input of this command"


def json_in_an_unwritable_folder(sb):
    folder = Path("/sys") if os.geteuid() == 0 else sb.root / "read-only"  # root writes into mode 555 folders
    if folder != Path("/sys"):
        folder.mkdir()
        folder.chmod(0o555)
    return _evaluate(sb, "--json", str(folder / "scores.json")), "scores.json"


def evaluate_palette_colours_as_prediction(sb):
    pred = next(sb.P.rglob("*.png"))
    cv2.imwrite(str(pred), np.dstack([read_label(pred)] * 3))
    return _evaluate(sb), f"{pred.name}: 3 channels"


def train_out_in_dataset(sb):
    return _train(sb, sb.D / "run"), "run: inside the dataset folder"


def train_out_dotdot_into_dataset(sb):
    return _train(sb, sb.D / "gtFine" / ".." / "run"), "inside the dataset folder"


def train_out_unwritable(sb):
    folder = Path("/sys") if os.geteuid() == 0 else sb.root / "read-only"
    if folder != Path("/sys"):
        folder.mkdir()
        folder.chmod(0o555)
    return _train(sb, folder / "run"), "run: cannot create this folder"


def train_over_a_lone_best(sb):
    sb.link("checkpoint", sb.root / "run" / "best.pt")
    return _train(sb, sb.root / "run"), "run holds a run (best.pt)"


def train_over_a_lone_history(sb):
    (sb.root / "run").mkdir()
    (sb.root / "run" / "history.json").write_text('{"iter": [1]}\n')
    return _train(sb, sb.root / "run"), "run holds a run (history.json)"


def resume_without_last_but_best(sb):
    sb.link("checkpoint", sb.root / "run" / "best.pt")
    return _train(sb, sb.root / "run", "--resume"), "run holds best.pt but no last.pt to resume from"


def _last(sb, content: bytes | None = None, name: str | None = None) -> Path:
    path = sb.root / "run" / "last.pt"
    if name:
        return sb.link(name, path)
    path.parent.mkdir()
    path.write_bytes(content)
    return path


def resume_random_bytes(sb):
    last = _last(sb, np.random.default_rng(0).bytes(4096))
    return _train(sb, sb.root / "run", "--resume"), f"{last} is unreadable"


def resume_text_file(sb):
    last = _last(sb, b"iteration: 4\nloss: 0.5\n")
    return _train(sb, sb.root / "run", "--resume"), f"{last} is unreadable"


def resume_hostile_pickle(sb):
    last = _last(sb, name="hostile")
    return _train(sb, sb.root / "run", "--resume"), f"{last} refused"


def resume_34_classes(sb):
    last = _last(sb, name="labelids34")
    return _train(sb, sb.root / "run", "--resume"), f"{last}"


def weights_hostile_pickle(sb):
    path = sb.link("hostile", sb.root / "weights.pt")
    return _train(sb, sb.root / "run", "--weights", str(path)), f"{path} refused"


def weights_protocol_4_pickle(sb):
    # tensors pickled with pickle itself: torch.storage._load_from_bytes runs torch.load(weights_only=False) inside,
    # so it is refused like any object; and torch's protocol warning does not make a second line
    path = sb.link("protocol4", sb.root / "weights.pt")
    return _train(sb, sb.root / "run", "--weights", str(path)), f"{path} refused: it holds a pickled Python object"


def _predict(sb, checkpoint: Path, *extra: str) -> list[str]:
    return ["predict", "--checkpoint", str(checkpoint), *extra]


def predict_random_bytes(sb):
    path = sb.root / "model.pt"
    path.write_bytes(np.random.default_rng(1).bytes(2048))
    return _predict(sb, path, "--data-root", str(sb.D), "--out", str(sb.root / "out")), f"{path} is unreadable"


def predict_hostile_pickle(sb):
    path = sb.link("hostile", sb.root / "model.pt")
    return _predict(sb, path, "--data-root", str(sb.D), "--out", str(sb.root / "out")), f"{path} refused"


def predict_over_an_unrelated_file(sb):
    photos = sb.root / "photos"
    photos.mkdir()
    shutil.copy(find_samples(sb.D, "val")[0].image_path, photos / "photo.jpg")
    (photos / "photo.png").write_bytes(b"a file the user keeps")
    args = _predict(sb, sb.link("checkpoint", sb.root / "model.pt"), "--images", str(photos / "photo.jpg"),
                    "--out", str(photos), "--format", "color")
    return args, "photo.png exists"


def predict_images_into_dataset(sb):
    image = find_samples(sb.D, "val")[0].image_path
    args = _predict(sb, sb.link("checkpoint", sb.root / "model.pt"), "--images", str(image), "--out",
                    str(sb.D / "preds"))
    return args, "preds: inside the dataset folder"


def predict_split_into_dataset(sb):
    args = _predict(sb, sb.link("checkpoint", sb.root / "model.pt"), "--data-root", str(sb.D), "--out",
                    str(sb.D / "leftImg8bit" / "preds"))
    return args, "preds: inside the dataset folder"


def predict_out_is_a_file(sb):
    (sb.root / "out").write_text("not a folder")
    args = _predict(sb, sb.link("checkpoint", sb.root / "model.pt"), "--data-root", str(sb.D), "--out",
                    str(sb.root / "out"))
    return args, "out: is a file"


def predict_a_text_file(sb):
    (sb.root / "notes.txt").write_text("hello")
    args = _predict(sb, sb.link("checkpoint", sb.root / "model.pt"), "--images", str(sb.root / "notes.txt"),
                    "--out", str(sb.root / "out"))
    return args, "notes.txt: not an image or video file"


def _train_ids_files(sb, split: str, broken: int) -> Path:
    """Write *_gtFine_labelTrainIds.png files for a split (the official download has none; csCreateTrainIdLabelImgs
    writes them); the first ``broken`` of them hold 50 everywhere. Return the first."""
    first = None
    for i, sample in enumerate(find_samples(sb.D, split)):
        path = Path(str(sample.label_path).replace("_labelIds.png", "_labelTrainIds.png"))
        train_ids = label_ids_to_train_ids(read_label(sample.label_path))
        cv2.imwrite(str(path), np.full_like(train_ids, 50) if i < broken else train_ids)
        first = first or path
    return first


def check_train_ids_out_of_range(sb):
    path = _train_ids_files(sb, "val", broken=1)
    return ["check", str(sb.D)], f"{path.name}: trainIds [50] outside 0..18 and 255"


def train_train_ids_out_of_range(sb):
    _train_ids_files(sb, "train", broken=len(find_samples(sb.D, "train")))
    return _train(sb, sb.root / "run"), "_gtFine_labelTrainIds.png: trainIds [50] outside 0..18 and 255"


def train_corrupt_val_image(sb):
    image = find_samples(sb.D, "val")[-1].image_path
    image.write_bytes(np.random.default_rng(2).bytes(1000))
    return _train(sb, sb.root / "run"), f"{image}: unreadable or corrupt image header"


def train_lr_nan(sb):
    return _train(sb, sb.root / "run", "--lr", "nan"), "lr must be a finite number, got nan"


def train_lr_inf(sb):
    return _train(sb, sb.root / "run", "--lr", "inf"), "lr must be a finite number, got inf"


def train_crop_zero(sb):
    return _train(sb, sb.root / "run", "--crop", "0x0"), "expected HEIGHTxWIDTH in pixels, both at least 1"


def train_empty_cityscapes_dataset(sb):
    (sb.root / "empty").mkdir()
    return ["train", "--out", str(sb.root / "run"), "--iters", "2", *RUN], "empty"


def synth_into_the_dataset(sb):
    return ["synth", str(sb.D / "gtFine" / "more"), "--size", "64x128"], "gtFine: inside the dataset folder"


def resume_with_another_optimizer(sb):
    shutil.copytree(sb.shared["run"], sb.root / "run", copy_function=os.link)
    return (_train(sb, sb.root / "run", "--resume", "--optimizer", "sgd", iters="4"),
            "written by a run with optimizer adamw")


def train_disk_full(sb):
    shutil.copytree(sb.shared["run"], sb.root / "run", copy_function=os.link)
    return _train(sb, sb.root / "run", "--resume", iters="4"), "last.pt: writing failed"


def train_where_another_process_trains(sb):
    # this test process holds the run folder (its .lock file, there before and after) while the command runs
    run = Path(shutil.copytree(sb.shared["run"], sb.root / "run", copy_function=os.link))
    HOLDERS.append(RunLock(run))
    HOLDERS[-1].acquire()
    return (_train(sb, run, "--resume", iters="4"),
            f"{run}: another process (pid {os.getpid()} on host {socket.gethostname()}) is training in this run folder")


def _cut_photo(sb, name: str) -> Path:
    photo = sb.root / name
    cv2.imwrite(str(photo), cv2.imread(str(find_samples(sb.D, "val")[0].image_path)))
    data = photo.read_bytes()
    photo.write_bytes(data[:len(data) // 2])
    return photo


def predict_a_cut_off_jpeg(sb):
    photo = _cut_photo(sb, "photo.jpg")  # libjpeg decodes it with a grey bottom half and a warning
    args = _predict(sb, sb.link("checkpoint", sb.root / "model.pt"), "--images", str(photo), "--out",
                    str(sb.root / "out"))
    return args, f"{photo}: truncated or corrupt image (it does not decode completely)"


def predict_a_cut_off_png(sb):
    photo = _cut_photo(sb, "photo.png")  # libpng refuses it, with a line of its own on stderr
    args = _predict(sb, sb.link("checkpoint", sb.root / "model.pt"), "--images", str(photo), "--out",
                    str(sb.root / "out"))
    return args, f"{photo}: truncated or corrupt image (it does not decode completely)"


# Videos, ONNX, export


def _video(path: Path, frames: int, fourcc: str = "MJPG", codec: bytes | None = None) -> Path:
    """Write a 48x64 AVI (MJPG) of ``frames`` frames; ``codec``: its codec's name in the header replaced."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    if codec:
        path.write_bytes(path.read_bytes().replace(fourcc.encode(), codec))
    return path


def predict_a_text_file_named_mp4(sb):
    (sb.root / "clip.mp4").write_text("not a video")
    args = _predict(sb, sb.link("checkpoint", sb.root / "model.pt"), "--images", str(sb.root / "clip.mp4"),
                    "--out", str(sb.root / "out"))
    return args, f"{sb.root / 'clip.mp4'}: not a video"


def predict_a_video_without_frames(sb):
    clip = _video(sb.root / "clip.avi", 0)
    args = _predict(sb, sb.link("checkpoint", sb.root / "model.pt"), "--images", str(clip), "--out",
                    str(sb.root / "out"))
    return args, f"{clip}: the video has no frames"


def predict_a_video_in_an_unknown_codec(sb):
    clip = _video(sb.root / "clip.avi", 3, codec=b"ZZZZ")
    args = _predict(sb, sb.link("checkpoint", sb.root / "model.pt"), "--images", str(clip), "--out",
                    str(sb.root / "out"))
    return args, f"{clip}: OpenCV cannot decode this AVI video (codec 'ZZZZ'"


def predict_a_video_as_index_masks(sb):
    clip = _video(sb.root / "clip.avi", 3)
    args = _predict(sb, sb.link("checkpoint", sb.root / "model.pt"), "--images", str(clip), "--out",
                    str(sb.root / "out"), "--format", "index")
    return args, f"{clip}: a video is written in color or overlay, not index"


def predict_onnx_not_onnx(sb):
    (sb.root / "model.onnx").write_bytes(np.random.default_rng(3).bytes(2000))
    image = find_samples(sb.D, "val")[0].image_path
    args = ["predict", "--onnx", str(sb.root / "model.onnx"), "--images", str(image), "--out", str(sb.root / "out")]
    return args, f"{sb.root / 'model.onnx'}: not an ONNX model ONNX Runtime can load"


def predict_scale_zero(sb):
    image = find_samples(sb.D, "val")[0].image_path
    args = _predict(sb, sb.link("checkpoint", sb.root / "model.pt"), "--images", str(image), "--out",
                    str(sb.root / "out"), "--scale", "0")
    return args, "argument --scale: expected a factor above 0"


def export_into_the_dataset(sb):
    args = ["export", "--checkpoint", str(sb.link("checkpoint", sb.root / "model.pt")), "--out",
            str(sb.D / "model.onnx")]
    return args, "model.onnx: inside the dataset folder"


def check_an_empty_folder(sb):
    (sb.root / "empty").mkdir()
    return ["check", str(sb.root / "empty")], f"{sb.root / 'empty'}: neither Cityscapes (leftImg8bit/ and gtFine/) " \
        "nor a plain folder"


# Your own data (a plain folder, ``F``): each error names the file.


def _own_train(sb: Sandbox, *extra: str) -> list[str]:
    return ["train", "--data-root", str(sb.F), "--out", str(sb.root / "run"), "--iters", "2", *RUN, *extra]


def own_photo_without_mask(sb):
    photo, mask = sb.own()
    mask.unlink()
    return ["check", str(sb.F)], f"{photo}: a photo without a mask (expected masks/train/{mask.name})"


def own_mask_without_photo(sb):
    photo, mask = sb.own("train", 1)
    photo.unlink()
    return _own_train(sb), f"{mask}: a mask without a photo (expected images/train/{photo.stem}{PHOTO_TYPES})"


def own_val_mask_without_photo(sb):
    """A val split that is there but broken stops train: not a warning and a run without validation."""
    _, mask = sb.own("val", 0)
    stray = mask.with_name("stray.png")
    shutil.copy(mask, stray)
    return _own_train(sb), f"{stray}: a mask without a photo (expected images/val/stray{PHOTO_TYPES})"


def own_mask_of_another_size(sb):
    _, mask = sb.own()
    cv2.imwrite(str(mask), cv2.resize(cv2.imread(str(mask)), (63, 47), interpolation=cv2.INTER_NEAREST))
    return _own_train(sb), f"{mask}: mask is 63x47, its image is 64x48 (expected equal sizes)"


def own_mask_value_outside_the_table(sb):
    _, mask = sb.own("val")
    cv2.imwrite(str(mask), np.full((48, 64), 9, np.uint8))  # an index mask: 6 classes, 9 is none of them
    return ["check", str(sb.F)], f"{mask}: mask values [9] outside the class table (expected class indices 0..5 " \
        "and ignore_index 255)"


def own_mask_colour_not_in_the_table(sb):
    for split in ("train", "val"):
        for i in range(2 if split == "train" else 1):
            _, mask = sb.own(split, i)
            colours = cv2.imread(str(mask))
            colours[:3, :4] = (3, 2, 1)  # BGR: RGB [1, 2, 3] on 12 pixels
            cv2.imwrite(str(mask), colours)
    return _own_train(sb), "colour [1, 2, 3] on 12 pixels is not in the class table (expected the 6 class colours"


def own_jpeg_mask(sb):
    _, mask = sb.own()
    cv2.imwrite(str(mask.with_suffix(".jpg")), cv2.imread(str(mask)))
    mask.unlink()
    return ["check", str(sb.F)], f"{mask.with_suffix('.jpg')}: a JPEG mask; masks must be PNG (lossy JPEG " \
        "compression changes the class values at every edge)"


def own_classes_not_json(sb):
    (sb.F / "classes.json").write_text('{"classes": [{"name": "road", "color": [1, 2, 3]},')
    return _own_train(sb), f"{sb.F / 'classes.json'}: not valid JSON (line 1"


def own_classes_unreadable(sb):
    (sb.F / "classes.json").unlink()
    (sb.F / "classes.json").mkdir()
    return _own_train(sb), f"{sb.F / 'classes.json'}: cannot read this class table"


def own_classes_missing(sb):
    (sb.F / "classes.json").unlink()
    return ["check", str(sb.F)], f"{sb.F / 'classes.json'}: no class table (expected a classes.json"


def own_duplicate_names(sb):
    table = sb.root / "dup.json"
    table.write_text('{"classes": [{"name": "road", "color": [1, 2, 3]}, {"name": "road", "color": [4, 5, 6]}]}')
    return _own_train(sb, "--classes", str(table)), f"{table}: classes 0 and 1 have the same name 'road'"


def own_duplicate_colours(sb):
    table = sb.root / "dup.json"
    table.write_text('{"classes": [{"name": "road", "color": [1, 2, 3]}, {"name": "path", "color": [1, 2, 3]}]}')
    return ["check", str(sb.F), "--classes", str(table)], f"{table}: classes 0 and 1 have the same colour [1, 2, 3]"


def own_empty_split(sb):
    for photo in (sb.F / "images" / "train").iterdir():
        photo.unlink()
    return _own_train(sb), f"{sb.F / 'images' / 'train'}: no photos (expected <name>{PHOTO_TYPES} files)"


def own_neither_layout(sb):
    (sb.F / "images").rename(sb.F / "photos")
    return _own_train(sb), f"{sb.F}: neither Cityscapes (leftImg8bit/ and gtFine/) nor a plain folder"


def own_predict_into_the_folder(sb):
    return ["predict", "--checkpoint", str(sb.shared["checkpoint"]), "--data-root", str(sb.F), "--out",
            str(sb.F / "preds")], f"{sb.F / 'preds'}: inside the dataset folder"


CASES = [
    Case("evaluate --json onto ground truth", json_onto_ground_truth),
    Case("evaluate --json new file in the dataset", json_new_file_in_dataset),
    Case("evaluate --json through a symlink into the dataset", json_through_a_symlink),
    Case("evaluate --json relative path into the dataset", json_relative_into_dataset, cwd="preds"),
    Case("evaluate --json onto a folder", json_onto_a_folder),
    Case("evaluate --json onto an existing file", json_onto_an_existing_file),
    Case("evaluate --json --overwrite onto a prediction", json_onto_a_prediction),
    Case("evaluate --json in an unwritable folder", json_in_an_unwritable_folder),
    Case("evaluate a colour prediction", evaluate_palette_colours_as_prediction),
    Case("train --out inside the dataset", train_out_in_dataset),
    Case("train --out with .. into the dataset", train_out_dotdot_into_dataset),
    Case("train --out in an unwritable folder", train_out_unwritable),
    Case("train over a folder holding only best.pt", train_over_a_lone_best),
    Case("train over a folder holding only history.json", train_over_a_lone_history),
    Case("train --resume with best.pt but no last.pt", resume_without_last_but_best),
    Case("train --resume from random bytes", resume_random_bytes),
    Case("train --resume from a text file", resume_text_file),
    Case("train --resume from a hostile pickle", resume_hostile_pickle),
    Case("train --resume from a 34-class last.pt", resume_34_classes),
    Case("train --resume with another optimizer", resume_with_another_optimizer),
    Case("train --weights a hostile pickle", weights_hostile_pickle),
    Case("train --weights a protocol-4 pickle", weights_protocol_4_pickle),
    Case("train with trainIds out of range", train_train_ids_out_of_range),
    Case("train with a corrupt val image", train_corrupt_val_image),
    Case("train --lr nan", train_lr_nan),
    Case("train --lr inf", train_lr_inf),
    Case("train --crop 0x0", train_crop_zero, code=2),
    Case("train with an empty CITYSCAPES_DATASET", train_empty_cityscapes_dataset,
         env={"CITYSCAPES_DATASET": "{root}/empty"}),
    Case("train on a full disk", train_disk_full, limit_file_size=20 << 20),
    Case("train where another process is training", train_where_another_process_trains),
    Case("predict --checkpoint random bytes", predict_random_bytes),
    Case("predict --checkpoint a hostile pickle", predict_hostile_pickle),
    Case("predict --images next to an unrelated file of the output's name", predict_over_an_unrelated_file),
    Case("predict --images from and into the dataset", predict_images_into_dataset),
    Case("predict --split into the dataset", predict_split_into_dataset),
    Case("predict --out an existing file", predict_out_is_a_file),
    Case("predict --images a text file", predict_a_text_file),
    Case("predict --images a JPEG cut in half", predict_a_cut_off_jpeg),
    Case("predict --images a PNG cut in half", predict_a_cut_off_png),
    Case("predict --images a text file named .mp4", predict_a_text_file_named_mp4),
    Case("predict --images a video without frames", predict_a_video_without_frames),
    Case("predict --images a video in a codec OpenCV cannot read", predict_a_video_in_an_unknown_codec),
    Case("predict --images a video --format index", predict_a_video_as_index_masks),
    Case("predict --onnx a file that is not ONNX", predict_onnx_not_onnx),
    Case("predict --scale 0", predict_scale_zero, code=2),
    Case("export --out into the dataset", export_into_the_dataset),
    Case("check trainIds out of range", check_train_ids_out_of_range),
    Case("check an empty folder", check_an_empty_folder),
    Case("synth into the dataset", synth_into_the_dataset),
    Case("own data: check a photo without a mask", own_photo_without_mask),
    Case("own data: train with a mask without a photo", own_mask_without_photo),
    Case("own data: train with a val mask without a photo", own_val_mask_without_photo),
    Case("own data: train with a mask of another size", own_mask_of_another_size),
    Case("own data: check a mask value outside the table", own_mask_value_outside_the_table),
    Case("own data: train with a mask colour not in the table", own_mask_colour_not_in_the_table),
    Case("own data: check a JPEG mask", own_jpeg_mask),
    Case("own data: train with classes.json not JSON", own_classes_not_json),
    Case("own data: train with classes.json unreadable", own_classes_unreadable),
    Case("own data: check without classes.json", own_classes_missing),
    Case("own data: train --classes with duplicate names", own_duplicate_names),
    Case("own data: check --classes with duplicate colours", own_duplicate_colours),
    Case("own data: train on an empty split", own_empty_split),
    Case("own data: train on a folder of neither layout", own_neither_layout),
    Case("own data: predict into the data folder", own_predict_into_the_folder),
]


# ------------------------------------------------------------------------------------------------------------
# Running them


@pytest.fixture(scope="module")
def shared(synthetic_root, module_tmp) -> dict[str, Path]:
    """Files the sandboxes link to: checkpoints good and bad, and a run stopped at iteration 2."""
    folder = module_tmp("shared")
    model = build_model(19, weights=None, aux_loss=False, output_stride=16)
    torch.save(model.state_dict(), folder / "checkpoint.pt")
    torch.save({"format": CHECKPOINT_FORMAT, "model": build_model(34, weights=None, output_stride=16).state_dict(),
                "iteration": 1, "config": {"iters": 2, "optimizer": "adamw"}}, folder / "labelids34.pt")
    torch.save({"model": _Hostile(folder / MARKER)}, folder / "hostile.pt")
    with open(folder / "protocol4.pt", "wb") as f:
        pickle.dump({"model": {"w": torch.zeros(2)}}, f, protocol=4)
    run = folder / "run"
    # the smoke profile's recipe, as the command lines below (--profile smoke) resume it
    train(TrainConfig.from_profile("smoke", data_root=synthetic_root, out_dir=run, iters=4, stop_at=2,
                                   crop_size=(48, 96), batch_size=2, warmup_iters=1, val_every=2, weights="none",
                                   seed=0), progress=False)
    return {"checkpoint": folder / "checkpoint.pt", "labelids34": folder / "labelids34.pt",
            "hostile": folder / "hostile.pt", "protocol4": folder / "protocol4.pt", "run": run}


def _prepare(case: Case, root: Path, synthetic_root: Path, shared: dict[str, Path]) -> dict:
    sb = Sandbox(root, shared)
    shutil.copytree(synthetic_root, sb.D)
    write_synthetic_folder(sb.F, train=2, val=1, test=0, size=(48, 64), seed=0)
    for sample in find_samples(sb.D, "val"):  # perfect predictions (evaluated classes only)
        out = sb.P / sample.city / sample.image_path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), train_ids_to_label_ids(label_ids_to_train_ids(read_label(sample.label_path))))
    args, expected = case.prepare(sb)
    env = {**os.environ, **{k: v.format(root=root) for k, v in case.env.items()}}
    return dict(args=args, expected=expected, env=env, before=_digests(root), root=root,
                cwd=root / case.cwd if case.cwd else root)


def _limits(file_size: int | None):
    if file_size is None:
        return None

    def apply() -> None:  # in the child: writes past the limit fail with EFBIG instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    return apply


@pytest.fixture(scope="module")
def results(synthetic_root, shared, module_tmp) -> Iterator[dict[str, Future]]:
    """The cases started 3 at a time as soon as the module starts; each test waits for its own (so pytest prints
    a dot every few seconds instead of one long silence)."""
    prepared = {c.name: _prepare(c, module_tmp("case"), synthetic_root, shared) for c in CASES}

    def run(case: Case) -> dict:
        p = prepared[case.name]
        done = subprocess.run([sys.executable, "-m", "seg_utils", *p["args"]], cwd=p["cwd"], env=p["env"],
                              capture_output=True, text=True, timeout=300, preexec_fn=_limits(case.limit_file_size))
        return {**p, "code": done.returncode, "stderr": done.stderr, "after": _digests(p["root"])}

    with ThreadPoolExecutor(max_workers=3) as pool:
        yield {case.name: pool.submit(run, case) for case in CASES}
    for lock in HOLDERS:
        lock.release()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, results, shared):
    r = results[case.name].result()
    lines = r["stderr"].strip().splitlines()
    assert r["code"] == case.code, r["stderr"]
    assert "Traceback" not in r["stderr"], r["stderr"]
    if case.code == 2:  # argparse: a usage block, then one line naming the option
        assert "error: argument --" in lines[-1] and r["expected"] in lines[-1], lines
    else:
        assert len(lines) == 1, r["stderr"]
        assert lines[0].startswith("error: ") and r["expected"] in lines[0], lines[0]
    changed = {k for k in r["before"].keys() | r["after"].keys() if r["before"].get(k) != r["after"].get(k)}
    assert not changed, f"files changed, added or removed: {sorted(changed)}"
    assert not (shared["hostile"].parent / MARKER).exists(), "the hostile pickle ran"
