"""Cityscapes on disk: finding frames by the official naming and reading them (``check`` validates a whole folder).

The data layer reads folders, whoever wrote them: the real dataset (``CITYSCAPES_DATASET``) and the
synthetic one are read by the same code, which never writes into the dataset folder.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import torch

try:  # libspng decodes RGB PNG frames faster than OpenCV's libpng (bench_data.py: libspng_speedup_vs_opencv)
    import pyspng
except ImportError:  # OpenCV decodes everything without it
    pyspng = None

from .classes import ClassTable
from .labels import IGNORE_INDEX, LABEL_MODES, NUM_LABEL_IDS, NUM_TRAIN_IDS, label_ids_to_train_ids

__all__ = [
    "SPLITS",
    "IMAGE_DIR",
    "LABEL_DIR",
    "DatasetError",
    "Sample",
    "split_files",
    "find_samples",
    "read_image",
    "header_size",
    "read_label",
    "read_target",
    "check_label_ids",
    "check_train_ids",
    "check_headers",
    "require_dataset",
    "require_labels",
    "CityscapesDataset",
]

# The official layout, declared once: {IMAGE_DIR | LABEL_DIR}/{split}/{city}/{city}_{seq}_{frame}{suffix}
SPLITS = ("train", "val", "test")
IMAGE_DIR, LABEL_DIR = "leftImg8bit", "gtFine"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
POLYGONS_SUFFIX = "_gtFine_polygons.json"
COLOR_SUFFIX = "_gtFine_color.png"
# The files a frame may or may not have (the real download ships no labelTrainIds; the test split no polygons).
OPTIONAL_FILES = ("train_ids_path", "instance_path", "polygons_path", "color_path")
STEM_PATTERN = re.compile(r"^(?P<city>[^/]+)_(?P<seq>\d{6})_(?P<frame>\d{6})$")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# a JPEG marker with a length (or the end): not stuffing (00), a restart (D0-D7), TEM (01) or a fill byte
_JPEG_MARKER = re.compile(rb"\xff[^\x00\x01\xd0-\xd7\xff]")

# OpenCV decodes with its own thread pool; in DataLoader workers that oversubscribes the cores.
cv2.setNumThreads(1)


class DatasetError(ValueError):
    """A dataset folder or file is not what the official Cityscapes layout expects."""


@dataclass(frozen=True)
class Sample:
    """One frame: where its files are. Optional files that the dataset does not hold are None."""

    split: str
    city: str
    stem: str  # "{city}_{seq:06d}_{frame:06d}"
    label_word: ClassVar[str] = "label"  # what errors call its label file
    photos: ClassVar[bool] = False  # images read as frames (strict), not as photos (EXIF orientation applied)
    image_path: Path
    label_path: Path
    train_ids_path: Path | None = None
    instance_path: Path | None = None
    polygons_path: Path | None = None
    color_path: Path | None = None

    @classmethod
    def at(cls, root: str | Path, split: str, city: str, stem: str) -> Sample:
        """Return where the official layout puts every file of a frame (whether or not they exist)."""
        root = Path(root)
        gt = root / LABEL_DIR / split / city / stem
        return cls(split, city, stem, root / IMAGE_DIR / split / city / f"{stem}{IMAGE_SUFFIX}",
                   Path(f"{gt}{LABEL_SUFFIX}"), Path(f"{gt}{TRAIN_IDS_SUFFIX}"), Path(f"{gt}{INSTANCE_SUFFIX}"),
                   Path(f"{gt}{POLYGONS_SUFFIX}"), Path(f"{gt}{COLOR_SUFFIX}"))

    def target_path(self, label_mode: str = "trainId") -> Path:
        """Return the file training targets are read from: the trainIds file when there is one and trainIds
        are wanted, else the label ids (mapped on the fly)."""
        return self.train_ids_path if label_mode == "trainId" and self.train_ids_path is not None else self.label_path


def split_files(root: str | Path, split: str, with_images: bool = True) -> Iterator[tuple[Path, str, str]]:
    """The files ``_scan`` reads for a split, as (path, top folder, suffix):
    ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` (unless ``with_images=False``) and
    ``gtFine/<split>/<city>/*_gtFine_labelIds.png``."""
    scans = ((IMAGE_DIR, IMAGE_SUFFIX), (LABEL_DIR, LABEL_SUFFIX))
    for top, suffix in scans[0 if with_images else 1:]:
        yield from ((path, top, suffix) for path in (Path(root) / top / split).glob(f"*/*{suffix}"))


def _scan(root: Path, split: str, with_images: bool = True) -> tuple[list[Sample], list[str]]:
    """Return the paired frames of a split and one line per problem found in the names.

    ``with_images=False``: the ground truth alone (``gtFine``) is scanned, as the official evaluator does;
    every frame's ``image_path`` is then where its image would be.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not root.is_dir():
        return [], [f"{root}: dataset folder not found (expected {IMAGE_DIR}/ and {LABEL_DIR}/ inside; "
                    "set CITYSCAPES_DATASET or write a synthetic set with `python -m seg_utils synth`)"]
    tops = (IMAGE_DIR, LABEL_DIR) if with_images else (LABEL_DIR,)
    problems = []
    for top in tops:
        if not (root / top / split).is_dir():
            problems.append(f"{root / top / split}: no such folder (expected {top}/{split}/<city>/)")
    if problems:
        return [], problems

    images, labels = {}, {}
    for path, top, suffix in split_files(root, split, with_images):
        stem = path.name[: -len(suffix)]
        match = STEM_PATTERN.match(stem)
        if match is None or match["city"] != path.parent.name:
            problems.append(f"{path}: name does not follow the official pattern "
                            f"{top}/{split}/<city>/<city>_<seq:06d>_<frame:06d>{suffix}")
            continue
        (images if top == IMAGE_DIR else labels)[stem] = path

    samples = []
    for stem in sorted(images.keys() | labels.keys()):
        city = STEM_PATTERN.match(stem)["city"]
        if stem not in labels:
            problems.append(f"{images[stem]}: an image without a label (expected "
                            f"{LABEL_DIR}/{split}/{city}/{stem}{LABEL_SUFFIX})")
            continue
        if with_images and stem not in images:
            problems.append(f"{labels[stem]}: a label without an image (expected "
                            f"{IMAGE_DIR}/{split}/{city}/{stem}{IMAGE_SUFFIX})")
            continue
        full = Sample.at(root, split, city, stem)
        absent = {key: None for key in OPTIONAL_FILES if not getattr(full, key).is_file()}
        samples.append(replace(full, **absent))
    return samples, problems


def find_samples(root: str | Path, split: str, with_images: bool = True) -> list[Sample]:
    """Return the frames of a split sorted by name, or raise DatasetError on the first naming problem.

    This is the one place that knows where a frame's files are: the dataset, ``check``, evaluation, the official
    evaluator's bridge and the synthetic writer all go through it (or ``Sample.at``). ``with_images=False``
    lists the ground truth alone (evaluation needs no images).
    """
    root = Path(root)
    samples, problems = _scan(root, split, with_images)
    raise_first(problems, root)
    if not samples:
        top, suffix = (IMAGE_DIR, IMAGE_SUFFIX) if with_images else (LABEL_DIR, LABEL_SUFFIX)
        raise DatasetError(f"{root / top / split}: no frames found (expected "
                           f"<city>/<city>_<seq>_<frame>{suffix} files)")
    return samples


def raise_first(problems: list[str], root: Path) -> None:
    """Raise DatasetError with the first of ``problems`` (if any), saying how many more ``check`` would list."""
    if problems:
        more = len(problems) - 1
        raise DatasetError(problems[0] + (f" (and {more} more problem{'s' * (more > 1)}: run `python -m seg_utils "
                                          f"check {root}`)" if more else ""))


def read_image(path: str | Path, strict: bool = True) -> np.ndarray:
    """Return an RGB image as an (H, W, 3) uint8 array, or raise DatasetError naming the file.

    ``strict`` (a dataset's ``leftImg8bit`` frames): 8-bit RGB or RGBA only (the alpha dropped). Otherwise (your
    own photos, ``predict --images``) any image OpenCV reads, converted as its ``IMREAD_COLOR`` does: grey to
    three equal channels, alpha dropped, 16 bits to their high byte, a palette to its colours, CMYK to RGB, and
    a JPEG's EXIF orientation applied. Either way a PNG or JPEG that does not decode completely (cut off: libjpeg
    would fill the rest with grey and only warn) is refused.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read this image ({err.strerror})") from None
    if not _complete(data):
        raise DatasetError(f"{path}: truncated or corrupt image (it does not decode completely)")
    if strict and _png_format(data) in ((8, 2), (8, 6)):  # 8-bit RGB or RGBA: libspng gives RGB order as stored
        array = _spng(data)
        if array is not None:
            return array if array.shape[2] == 3 else np.ascontiguousarray(array[..., :3])
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED if strict else cv2.IMREAD_COLOR) \
        if data else None
    if array is None:
        expected = "an 8-bit RGB image: PNG or JPEG" if strict else "a PNG, JPEG, BMP, TIFF or WebP image"
        raise DatasetError(f"{path}: unreadable or corrupt image (expected {expected})")
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        channels = 1 if array.ndim == 2 else array.shape[2]
        raise DatasetError(f"{path}: expected an 8-bit RGB image, found {channels} channel(s) of {array.dtype}")
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGB)


def _complete(data: bytes) -> bool:
    """Return False for a PNG or JPEG cut off before its end marker (other formats: their decoder decides).

    A walk over the file's chunks (PNG) or markers (JPEG), not a decode. A JPEG's entropy-coded data holds no
    marker (0xFF is followed by 0x00, a restart marker or another 0xFF), and a segment's payload (an EXIF
    thumbnail with its own end marker) is skipped by its length; what follows the end marker (a phone's appended
    video, say) is not read."""
    if data[:8] == _PNG_SIGNATURE:
        pos = 8
        while pos + 8 <= len(data):
            if data[pos + 4:pos + 8] == b"IEND":
                return pos + 12 <= len(data)  # with its CRC
            pos += 12 + int.from_bytes(data[pos:pos + 4], "big")  # length, type, data, CRC
        return False
    if data[:3] == b"\xff\xd8\xff":
        pos = 2
        while (marker := _JPEG_MARKER.search(data, pos)) is not None:
            pos = marker.start()
            if data[pos + 1] == 0xD9:  # end of image
                return True
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")  # a segment: its length counts itself
        return False
    return True


def _png_format(data: bytes) -> tuple[int, int] | None:
    """Return a PNG's (bit depth, colour type: 0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA), or None."""
    # IHDR is always the first chunk: bit depth at byte 24, colour type at byte 25.
    if len(data) > 25 and data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR":
        return data[24], data[25]
    return None


def _spng(data: bytes) -> np.ndarray | None:
    """Return a PNG decoded by libspng in its own layout ((H, W) grey, (H, W, C) RGB[A]), or None where pyspng is
    missing or refuses the file (OpenCV or PIL then decide, with their own errors)."""
    if pyspng is None:
        return None
    try:
        return pyspng.load(data)
    except Exception:  # a bad CRC, a cut-off stream: the fallback reader names the file
        return None


def read_label(path: str | Path) -> np.ndarray:
    """Return a label or prediction image as an (H, W) uint8 array of ids, or raise DatasetError naming the file.

    The one reader for ``*_labelIds.png``, ``*_labelTrainIds.png`` and prediction PNGs, accepting what the
    official evaluator accepts (it reads with PIL and takes ``np.array(image)``): 8-bit grey (the usual file;
    decoded by OpenCV, the fast path), 1-bit (ids 0 and 1), palette (the indices, not the colours) and 16-bit
    grey (ids up to 255). Refused: colour, grey + alpha, floats, unreadable files.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read this label image ({err.strerror})") from None
    array = None
    if _png_format(data) == (8, 0):  # 8-bit grey: the usual file. OpenCV, not libspng: as fast on these small
        # files, and it lets go of the GIL, which evaluate_predictions' decoding threads need (pyspng does not)
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.ndim != 2:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as image:
                mode, array = image.mode, np.array(image)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise DatasetError(f"{path}: unreadable or corrupt label image (expected a single-channel PNG "
                               f"of ids)") from None
        if array.ndim != 2:
            raise DatasetError(f"{path}: {array.shape[2]} channels (PIL mode {mode}); expected a single-channel "
                               f"label image (ids, not colours: labels are the *_gtFine_labelIds.png files)")
        if array.dtype == bool:  # 1-bit: Pillow's bool array may store True as 0xFF; the evaluator reads 1
            array = array.astype(np.uint8)
        elif array.dtype.kind not in "ui":
            raise DatasetError(f"{path}: {array.dtype} values (PIL mode {mode}); expected integer ids")
        elif array.dtype != np.uint8:
            if array.size and (array.min() < 0 or array.max() > 255):
                raise DatasetError(f"{path}: holds id {int(array.max() if array.max() > 255 else array.min())}; "
                                   f"expected ids 0..255")
            array = array.astype(np.uint8)
    return array


def check_label_ids(label_ids: np.ndarray, path: str | Path) -> None:
    """Raise DatasetError naming ``path`` when a labelIds map holds an id outside the official table (0..33)."""
    if label_ids.size and label_ids.max() >= NUM_LABEL_IDS:  # one max: about 1 ms at 1024x2048
        bad = np.unique(label_ids[label_ids >= NUM_LABEL_IDS])
        raise DatasetError(f"{path}: label ids {bad.tolist()} outside the official table "
                           f"(expected 0..{NUM_LABEL_IDS - 1})")


def check_train_ids(train_ids: np.ndarray, path: str | Path) -> None:
    """Raise DatasetError naming ``path`` when a trainIds map holds a value other than 0..18 and 255."""
    if train_ids.size and train_ids.max() >= NUM_TRAIN_IDS:
        bad = np.unique(train_ids[(train_ids >= NUM_TRAIN_IDS) & (train_ids != IGNORE_INDEX)])
        if bad.size:
            raise DatasetError(f"{path}: trainIds {bad.tolist()[:5]} outside 0..{NUM_TRAIN_IDS - 1} and "
                               f"{IGNORE_INDEX} (delete the *{TRAIN_IDS_SUFFIX} files to map label ids on the "
                               f"fly, or recreate them with csCreateTrainIdLabelImgs)")


def read_target(sample: Sample, label_mode: str = "trainId") -> np.ndarray:
    """Return a frame's checked labels as (H, W) uint8: trainIds (its trainIds file when the dataset has one,
    else its label ids mapped) or label ids; DatasetError names a file holding values outside the table."""
    if sample.target_path(label_mode) == sample.train_ids_path:
        train_ids = read_label(sample.train_ids_path)
        check_train_ids(train_ids, sample.train_ids_path)
        return train_ids
    label_ids = read_label(sample.label_path)
    check_label_ids(label_ids, sample.label_path)
    return label_ids_to_train_ids(label_ids) if label_mode == "trainId" else label_ids


def header_size(path: Path, photo: bool = False) -> tuple[int, int]:
    """Return an image's (width, height) from its header; a ``photo``'s as shown, its EXIF quarter turn applied (as
    ``read_image`` applies it). PIL's errors pass through."""
    from PIL import Image

    with Image.open(path) as image:
        turned = photo and image.getexif().get(0x0112) in (5, 6, 7, 8)
        return image.size[::-1] if turned else image.size


def check_headers(samples: list[Sample]) -> None:
    """Raise DatasetError naming the first file of ``samples`` whose header is unreadable or whose size differs
    from its image's: reads headers only (a fraction of a millisecond a file), so a run can check every frame
    before its first iteration instead of failing at its first validation."""
    from PIL import UnidentifiedImageError

    for sample in samples:
        sizes = {}
        for path in (sample.image_path, sample.label_path, sample.train_ids_path):
            if path is None:
                continue
            try:
                sizes[path] = header_size(path, sample.photos and path == sample.image_path)
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                kind = "a PNG or JPEG" if path == sample.image_path else "a PNG"
                raise DatasetError(f"{path}: unreadable or corrupt image header (expected {kind})") from None
        image_size = sizes.pop(sample.image_path)
        for path, size in sizes.items():
            if size != image_size:
                raise DatasetError(_size_text(path, size, image_size, sample.label_word))


def require_dataset(root: str | Path, what: str = "dataset folder") -> Path:
    """Return ``root`` if it holds the official layout's two folders, ``leftImg8bit/`` and ``gtFine/``, else
    raise DatasetError saying which are missing (a quick look; each command then names any missing split, and
    ``check`` decodes every file)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: {what} not found (expected {IMAGE_DIR}/ and {LABEL_DIR}/ inside)")
    missing = [f"{top}/" for top in (IMAGE_DIR, LABEL_DIR) if not (root / top).is_dir()]
    if missing:
        raise DatasetError(f"{root}: {what} has no {' and no '.join(missing)} (expected the official zips "
                           f"leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip unzipped into it)")
    return root


def require_labels(split: str, error: type[Exception] = DatasetError) -> None:
    """Raise ``error`` (DatasetError, or the caller's own kind) when a split cannot be scored: the test split
    has no public labels."""
    if split == "test":
        raise error("the test split has no public labels (its gtFine files hold only void regions): "
                           "test scores come only from the official server; score the val split instead")


class CityscapesDataset(torch.utils.data.Dataset):
    """Cityscapes frames as ``(image, target)`` pairs, from the official folder layout.

    ``image`` is a uint8 (3, H, W) RGB tensor (``device.to_device`` normalises it on the model's device);
    ``target`` is a uint8 (H, W) tensor of trainIds 0..18 (``label_mode="trainId"``, the default) or of label
    ids 0..33 (``label_mode="labelId"``), 255 = ignore. With no ``transforms`` the target is at native
    resolution and equals, pixel for pixel, the official ``*_gtFine_labelTrainIds.png``.

    The test split loads, but its targets are void-only dummies (``has_labels`` is False).
    """

    def __init__(self, root: str | Path, split: str = "train", label_mode: str = "trainId",
                 transforms: Callable | None = None) -> None:
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        from .transforms import EvalTransform

        self.root = Path(root)
        self.split = split
        self.label_mode = label_mode
        self.transforms = transforms if transforms is not None else EvalTransform()
        self.samples = find_samples(self.root, split)
        self.has_labels = split != "test"
        self.table = ClassTable.cityscapes(label_mode)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        cities = len({s.city for s in self.samples})
        return (f"CityscapesDataset(split={self.split!r}, frames={len(self)}, cities={cities}, "
                f"label_mode={self.label_mode!r}, transforms={self.transforms!r})")

    def load_target(self, index: int) -> np.ndarray:
        """Return the untransformed target of a frame as an (H, W) uint8 array."""
        return read_target(self.samples[index], self.label_mode)

    def load_image(self, index: int) -> np.ndarray:
        """Return the untransformed image of a frame as an (H, W, 3) uint8 RGB array."""
        return read_image(self.samples[index].image_path)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the untransformed (image, target) of a frame, checked to be the same size."""
        image, target = self.load_image(index), self.load_target(index)
        sample = self.samples[index]
        problem = _size_problem(sample.target_path(self.label_mode), image, target)
        if problem:
            raise DatasetError(problem)
        return image, target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transforms(*self.load(index))


def _size_problem(path: Path, image: np.ndarray, label: np.ndarray, what: str = "label") -> str | None:
    """Return the one-line problem when a label file (``path``; a ``what``) and its image differ in size, else
    None."""
    if image.shape[:2] == label.shape[:2]:
        return None
    return _size_text(path, label.shape[1::-1], image.shape[1::-1], what)


def _size_text(where: str | Path, label_size: tuple[int, int], image_size: tuple[int, int],
               what: str = "label") -> str:
    (lw, lh), (iw, ih) = label_size, image_size
    return f"{where}: {what} is {lw}x{lh}, its image is {iw}x{ih} (expected equal sizes)"
