"""Writing and checking synthetic dataset folders: frame names, the official layout, reuse and atomic creation.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image

from ..cityscapes import sample_at
from ..layouts import SPLITS
from ..outputs import bar_disabled, refuse_dataset
from .render import render_frame

#: The real cities of each split (the official README's lists).
SPLIT_CITIES: dict[str, tuple[str, ...]] = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg",
              "hanover", "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm",
              "weimar", "zurich"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich"),
}
#: Bump when the generator's output changes, so that ensure_synthetic does not reuse an older set.
FORMAT_VERSION = 1
MARKER_NAME = "synthetic.json"
_MARKER_FORMAT = "seg_utils.synthetic"

_PNG_IMAGE_LEVEL = 1  # noisy RGB compresses poorly anyway; level 1 is ~4x faster than the default
_PNG_LABEL_LEVEL = 3


def frame_names(*, train: int, val: int, test: int, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Return, per split, the (city, stem) of every frame, sorted by stem.

    Frames are spread over a few real cities per split; sequence numbers grow with gaps and frame
    numbers are often, but not always, 000019 (the real set has e.g. frankfurt_000000_000294).
    """
    rng = np.random.default_rng([seed, 0x5EED])
    names: dict[str, list[tuple[str, str]]] = {}
    for split, count in zip(SPLITS, (train, val, test)):
        pool = SPLIT_CITIES[split]
        n_cities = min(len(pool), max(1, math.ceil(count / 4)))
        cities = sorted(rng.choice(len(pool), size=n_cities, replace=False).tolist())
        seq = {c: int(rng.integers(0, 3)) for c in cities}
        frames = []
        for i in range(count):
            city = pool[cities[i % n_cities]]
            seq[cities[i % n_cities]] += 1 + int(rng.integers(0, 40))
            frame = 19 if rng.random() < 0.5 else int(rng.integers(0, 1200))
            frames.append((city, f"{city}_{seq[cities[i % n_cities]]:06d}_{frame:06d}"))
        names[split] = sorted(frames, key=lambda cs: cs[1])
    return names


def write_synthetic_cityscapes(
    root: str | os.PathLike,
    *,
    train: int = 20,
    val: int = 5,
    test: int = 5,
    size: tuple[int, int] = (1024, 2048),
    seed: int = 0,
    progress: bool | None = False,
) -> Path:
    """Return ``root`` after writing a synthetic Cityscapes-format set of train/val/test frames into it.

    ``size`` is (height, width) of every frame. The same seed gives the same bytes. ``root`` must not
    exist, be empty, or hold a synthetic set written with the same parameters (then it is rewritten);
    any other folder is refused with a ValueError, so real data is never overwritten, and so is a folder
    inside a dataset (``outputs.OutputError``).
    """
    root = Path(root)
    params = _params(train=train, val=val, test=test, size=size, seed=seed)
    refuse_dataset(root.parent, option="folder for the synthetic set")  # not nested in a dataset
    if root.exists():
        _check_reusable(root, params, allow_empty=True)
    names = frame_names(train=train, val=val, test=test, seed=seed)
    jobs = [(split, i, city, stem) for split in SPLITS for i, (city, stem) in enumerate(names[split])]
    from tqdm.auto import tqdm

    jobs = tqdm(jobs, desc="synthetic Cityscapes", unit="frame", disable=bar_disabled(progress))
    for split, i, city, stem in jobs:
        rng = np.random.default_rng([seed, SPLITS.index(split), i])
        rgb, annotation = render_frame(rng, params["size"], labelled=split != "test")
        _write_frame(root, split, city, stem, rgb, annotation)
    # written last: a folder without it is an interrupted or foreign one
    (root / MARKER_NAME).write_text(json.dumps(params, indent=2) + "\n")
    return root


def ensure_synthetic(
    root: str | os.PathLike,
    *,
    train: int,
    val: int,
    test: int,
    size: tuple[int, int],
    seed: int = 0,
) -> Path:
    """Return ``root`` holding a synthetic set with these parameters, writing it only when missing.

    The set is written into a temporary sibling folder and renamed into place, so concurrent callers
    (pytest-xdist workers, two notebooks) never see a half-written set: the first rename wins and the
    others discard their copy. A folder holding anything else raises ValueError and is left untouched.
    """
    params = _params(train=train, val=val, test=test, size=size, seed=seed)
    return ensure_written(Path(root), params, lambda tmp: write_synthetic_cityscapes(
        tmp, train=train, val=val, test=test, size=params["size"], seed=seed))


def ensure_written(root: Path, params: dict[str, Any], write: Callable[[Path], Any]) -> Path:
    """Return ``root`` holding a synthetic set written with ``params`` (its marker), calling ``write(folder)`` only
    when it is missing: into a temporary sibling folder, then renamed into place (the first rename wins)."""
    if root.exists() and _check_reusable(root, params, allow_empty=True):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        try:
            os.replace(tmp, root)  # atomic; replaces root only if it is an empty folder
        except OSError:
            if not root.exists():
                raise
            # another process won the race (or root is a foreign folder): keep theirs, check it
            if not _check_reusable(root, params, allow_empty=False):
                raise ValueError(f"{root}: could not move the new synthetic set into place") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _params(*, train: int, val: int, test: int, size: tuple[int, int], seed: int) -> dict[str, Any]:
    for name, count in (("train", train), ("val", val), ("test", test)):
        if not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"synthetic set: {name} must be a frame count >= 0, got {count!r}")
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"synthetic set: size must be (height, width), got {size!r}") from None
    if height < 16 or width < 16:
        raise ValueError(f"synthetic set: size must be at least 16x16, got {height}x{width}")
    return {"format": _MARKER_FORMAT, "version": FORMAT_VERSION, "train": int(train), "val": int(val),
            "test": int(test), "size": [height, width], "seed": int(seed)}


def _check_reusable(root: Path, params: dict[str, Any], *, allow_empty: bool) -> bool:
    """Return True if root holds a set with exactly these parameters, False if it is an empty folder.

    Raise ValueError for anything else (a file, a foreign folder, a set with other parameters).
    """
    if not root.is_dir():
        raise ValueError(f"{root}: expected a folder for the synthetic Cityscapes set, found a file")
    marker = root / MARKER_NAME
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
        except (OSError, ValueError):
            found = None
        if found == params:
            return True
        raise ValueError(f"{root} holds a synthetic set written with other parameters ({marker.name}: "
                         f"{found}); expected {params}: delete the folder or choose another one")
    if allow_empty and not any(root.iterdir()):
        return False
    raise ValueError(f"{root} is not empty and is not a synthetic set (no {MARKER_NAME}): "
                     "refusing to write into it; choose another folder")


def _write_frame(root: Path, split: str, city: str, stem: str, rgb: np.ndarray, annotation: dict) -> None:
    files = sample_at(root, split, city, stem)  # the official names and folders (cityscapes.py declares them)
    files.image_path.parent.mkdir(parents=True, exist_ok=True)
    files.label_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, "RGB").save(files.image_path, compress_level=_PNG_IMAGE_LEVEL)
    text = json.dumps(annotation, indent=4)
    files.polygons_path.write_text(text)
    # The label images are drawn from the json text just written, by the official functions.
    ann = Annotation()
    ann.fromJsonText(text)
    createLabelImage(ann, "ids").save(files.label_path, compress_level=_PNG_LABEL_LEVEL)
    createLabelImage(ann, "color").save(files.color_path, compress_level=_PNG_LABEL_LEVEL)
    # The official json2instanceImg saves its mode "I" image directly, which Pillow >= 11 refuses for
    # PNG ("cannot write mode I as PNG"); the real files are 16-bit grayscale, so convert to I;16.
    instance_ids = np.asarray(createInstanceImage(ann, "ids"), dtype=np.int32).astype(np.uint16)
    Image.fromarray(instance_ids).save(files.instance_path, compress_level=_PNG_LABEL_LEVEL)
