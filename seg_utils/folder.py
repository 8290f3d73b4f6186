"""Your own data: a plain folder of images and masks with a class table (``FolderLayout``), the layout labelling-tool
exports convert to.

::

    my_data/classes.json                        the class table (``classes``)
    my_data/images/{train,val,test}/<name>.png  RGB photos: PNG, JPEG, or any other kind ``images.IMAGE_SUFFIXES`` names
    my_data/masks/{train,val}/<name>.png        one mask per photo: same <name>, same size, always PNG

A mask is either an **index mask** (single channel: class indices 0..N-1 and the table's ``ignore_index``) or a
**colour mask** (RGB: the table's colours and its ``ignore_color``); which one is decided per file, from the PNG's
header. ``images/test/`` may come without masks. Targets come out exactly as Cityscapes' do (uint8 class indices,
255 = ignore), so the engine, metrics and viewer do not know which layout they read. Nothing is ever written into
the folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .classes import CLASSES_FILE, ClassTable
from .images import IMAGE_SUFFIXES, DatasetError, png_format, read_label, size_problem
from .labels import IGNORE_INDEX
from .layouts import Layout, Part, Sample, SegmentationDataset
from .metrics import pair_histogram_u8

__all__ = ["IMAGES_DIR", "MASKS_DIR", "FolderLayout", "FolderDataset", "read_mask"]

IMAGES_DIR, MASKS_DIR = "images", "masks"
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_MASK_SUFFIXES = (".png", *_JPEG_SUFFIXES)  # JPEG masks are read only to be refused by name
_PHOTO_TYPES = ", ".join(IMAGE_SUFFIXES[:-1]) + " or " + IMAGE_SUFFIXES[-1]  # for messages


class FolderLayout(Layout):
    """A plain folder: photos in ``images/<split>/``, masks of the same name in ``masks/<split>/``, and its class
    table in ``classes.json`` (or the one ``classes`` names)."""

    name = "folder"
    description = (f"a plain folder ({IMAGES_DIR}/ and {MASKS_DIR}/, each with train/ and optionally val/, and "
                   f"{CLASSES_FILE})")
    parts = (Part(IMAGES_DIR, "*", IMAGE_SUFFIXES), Part(MASKS_DIR, "*", _MASK_SUFFIXES))
    photos = True
    label_word = "mask"
    prediction_format = "index"  # class indices, as its masks hold them
    optional_splits = {"val": "no val split: training runs without validation", "test": "no test split (optional)"}

    def __init__(self, root: str | Path, classes: str | Path | ClassTable | None = None,
                 label_mode: str = "classes") -> None:
        super().__init__(root, classes, "classes")  # class indices of its own table: Cityscapes' label_mode is not used

    @classmethod
    def holds(cls, folder: Path) -> bool:
        return (folder / IMAGES_DIR).is_dir() and ((folder / MASKS_DIR).is_dir() or (folder / CLASSES_FILE).is_file())

    def class_table(self, classes: str | Path | ClassTable | None) -> ClassTable:
        return self.given_table(classes if classes is not None else self.root / CLASSES_FILE)

    def scan(self, split: str, with_images: bool = True) -> tuple[list[Sample], list[str]]:
        """The photos of a split paired with their masks, and one line per problem (unpaired files, a JPEG mask,
        two photos of one name, an empty split). Photos are always scanned: a mask is named after its photo."""
        image_dir, mask_dir = self.root / IMAGES_DIR / split, self.root / MASKS_DIR / split
        if not image_dir.is_dir():
            return [], [f"{image_dir}: no such folder (expected {IMAGES_DIR}/{split}/<name>{_PHOTO_TYPES})"]
        problems: list[str] = []
        images: dict[str, Path] = {}
        masks: dict[str, Path] = {}
        refused: set[str] = set()  # names whose mask is a JPEG: that one problem, not also "a photo without a mask"
        for path, part in self.split_files(split):  # photos first, then masks
            if part.top == IMAGES_DIR:
                if path.stem in images:
                    problems.append(f"{path}: a second photo named {path.stem!r} (also "
                                    f"{images[path.stem]}); expected one photo per name")
                    continue
                images[path.stem] = path
            elif path.suffix.lower() in _JPEG_SUFFIXES:
                problems.append(_jpeg_mask_text(path))
                refused.add(path.stem)
            else:
                masks[path.stem] = path
        if not images:
            return [], [f"{image_dir}: no photos (expected <name>{_PHOTO_TYPES} files)"]
        labelled = mask_dir.is_dir() or split != "test"
        samples = []
        for name in sorted(images.keys() | masks.keys()):
            if name in refused and name not in masks:
                continue
            if name not in images:
                problems.append(f"{masks[name]}: a mask without a photo (expected "
                                f"{IMAGES_DIR}/{split}/{name}{_PHOTO_TYPES})")
            elif labelled and name not in masks:
                problems.append(f"{images[name]}: a photo without a mask (expected "
                                f"{MASKS_DIR}/{split}/{name}.png)")
            else:
                samples.append(Sample(split, name, images[name], masks.get(name)))
        return samples, problems

    def read_target(self, sample: Sample) -> np.ndarray:
        """(H, W) uint8 class indices (255 = ignore; all 255 for a photo without a mask)."""
        if sample.label_path is None:
            return np.full(self.read_image(sample).shape[:2], IGNORE_INDEX, np.uint8)
        return read_mask(sample.label_path, self.table)

    def read(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        """Each file decoded once; a mask of another size than its photo named."""
        image = self.read_image(sample)
        if sample.label_path is None:
            return image, np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        target = read_mask(sample.label_path, self.table)
        problem = size_problem(sample.label_path, image, target, self.label_word)
        if problem:
            raise DatasetError(problem)
        return image, target

    def prediction_path(self, sample: Sample, out_dir: Path) -> Path:
        return out_dir / f"{sample.stem}.png"  # an index mask's name

    def prediction_pairs(self, split: str, predictions_dir: Path) -> list[tuple[Path, Path]]:
        """``predictions_dir/<name>.png``, one per mask."""
        samples = self.samples(split)
        unlabelled = [s for s in samples if s.label_path is None]
        if unlabelled:
            raise DatasetError(f"{self.root / MASKS_DIR / split}: no masks, nothing to score (expected "
                               f"{unlabelled[0].stem}.png there)")
        if not predictions_dir.is_dir():
            raise DatasetError(f"{predictions_dir}: no such prediction folder")
        pairs = [(s.label_path, self.prediction_path(s, predictions_dir)) for s in samples]
        for gt_path, pred_path in pairs:
            if not pred_path.is_file():
                raise DatasetError(f"{pred_path}: no prediction (expected one for the mask {gt_path})")
        return pairs

    def pair_histogram(self, label_path: Path, prediction_path: Path, label_format: str) -> np.ndarray:
        """A prediction holds class indices as an index mask does, or the table's colours (``label_format`` is
        Cityscapes' and does not apply)."""
        gt, pred = read_mask(label_path, self.table), read_mask(prediction_path, self.table)
        if pred.shape != gt.shape:
            raise DatasetError(f"{prediction_path}: prediction is {pred.shape[1]}x{pred.shape[0]}, its mask "
                               f"{label_path} is {gt.shape[1]}x{gt.shape[0]} (expected equal sizes: predict at the "
                               f"photo's full size; `check` says whether the mask is its photo's size)")
        return pair_histogram_u8(gt, pred)

    def confusion(self, histogram: np.ndarray, label_format: str) -> np.ndarray:
        """Ignored mask pixels are not scored; a predicted ignore value is a miss."""
        k = len(self.table)
        return np.concatenate([histogram[:k, :k], histogram[:k, k:].sum(1, keepdims=True)], axis=1)


def _jpeg_mask_text(where: str | Path) -> str:
    return (f"{where}: a JPEG mask; masks must be PNG (lossy JPEG compression changes the class values at every "
            f"edge): export the masks as PNG")


def _rgb_key(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _colors_to_indices(rgb: np.ndarray, table: ClassTable, path: Path) -> np.ndarray:
    colors = list(table.colors) + ([table.ignore_color] if table.ignore_color is not None else [])
    values = np.array(list(range(len(table))) + [IGNORE_INDEX] * (len(colors) - len(table)), dtype=np.uint8)
    keys = _rgb_key(np.array(colors, dtype=np.uint8))
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    pixel_keys = _rgb_key(rgb)
    pos = np.searchsorted(keys, pixel_keys).clip(max=len(keys) - 1)
    found = keys[pos] == pixel_keys
    if not found.all():
        unknown, counts = np.unique(pixel_keys[~found], return_counts=True)
        top = int(np.argmax(counts))
        color = [int(unknown[top]) >> 16, (int(unknown[top]) >> 8) & 255, int(unknown[top]) & 255]
        more = len(unknown) - 1
        others = f" and {more} more unknown colour{'s' * (more > 1)} on {int(counts.sum()) - int(counts[top]):,} " \
            f"pixels" if more else ""
        raise DatasetError(f"{path}: colour {color} on {int(counts[top]):,} pixels is not in the class table"
                           f"{others} (expected the {len(table)} class colours"
                           f"{' or the ignore_color' if table.ignore_color is not None else ''} of {table.source})")
    return values[pos]


def read_mask(path: str | Path, table: ClassTable) -> np.ndarray:
    """Return a mask as (H, W) uint8 class indices, 255 = ignore, or raise DatasetError naming the file.

    An index mask (8-bit, 16-bit or 1-bit grey, or a palette PNG: its indices) holds class indices and the table's
    ``ignore_index``; a colour mask (RGB or RGBA PNG; alpha ignored) the table's colours and ``ignore_color``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read this mask ({err.strerror})") from None
    if data[:3] == b"\xff\xd8\xff" or path.suffix.lower() in _JPEG_SUFFIXES:
        raise DatasetError(_jpeg_mask_text(path))
    fmt = png_format(data)
    if fmt is None:
        raise DatasetError(f"{path}: not a PNG (expected a PNG mask of class indices or class colours)")
    if fmt[1] in (2, 6):  # RGB or RGBA: a colour mask
        import cv2

        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if array is None or array.dtype != np.uint8:
            raise DatasetError(f"{path}: unreadable or not 8-bit colour mask (expected an 8-bit RGB PNG)")
        return _colors_to_indices(cv2.cvtColor(array[..., :3], cv2.COLOR_BGR2RGB), table, path)
    if fmt[1] == 4:
        raise DatasetError(f"{path}: grey + alpha; expected a single-channel PNG of class indices or an RGB PNG "
                           f"of class colours")
    mask = read_label(path)
    bad = mask >= len(table)
    if bad.any():
        values = np.unique(mask[bad])
        values = values[values != table.ignore_index]
        if values.size:
            raise DatasetError(f"{path}: mask values {values.tolist()[:5]} outside the class table (expected "
                               f"class indices 0..{len(table) - 1} and ignore_index {table.ignore_index})")
        if table.ignore_index != IGNORE_INDEX:
            mask = np.where(mask == table.ignore_index, np.uint8(IGNORE_INDEX), mask)
    return mask


class FolderDataset(SegmentationDataset):
    """The frames of a plain folder's split (``layouts.SegmentationDataset``): uint8 class indices of its table, 255
    = ignore. ``table`` (or a ``classes`` file) overrides ``root/classes.json``."""

    def __init__(self, root: str | Path, split: str = "train", table: ClassTable | None = None,
                 classes: str | Path | None = None, transforms=None) -> None:
        super().__init__(FolderLayout(root, table if table is not None else classes), split, transforms)
