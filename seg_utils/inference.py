"""Prediction: whole-image, sliding-window and multi-scale + flip, and writing predictions: PNGs for images and
dataset frames, MP4s for videos (encoded by ``media``, videos read and written by ``video``).

Scores are computed elsewhere (``metrics``); this module only turns images into label maps, always at
the input's native resolution, and writes them in the official submission format (label ids).

Device and precision come from ``device``: on a GPU the model is stored ``channels_last`` and runs under
autocast (bfloat16 from compute capability 8.0, float16 before). Writing a folder of predictions is a
pipeline: DataLoader workers decode the next frames, the model predicts, a few threads encode and write
the PNGs (OpenCV releases the GIL while it encodes).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint_state
from .classes import ClassTable
from .data import DatasetError, find_samples, read_image
from .datasets import layout_of
from .device import (
    autocast,
    autocast_dtype,
    configure,
    cpu_cores,
    default_num_workers,
    memory_format,
    pick_device,
    to_device,
    worker_context,
)
from .folder import find_folder_samples
from .labels import LABEL_MODES, num_classes
from .media import (
    PREDICTION_FORMATS,
    encode_prediction,
    find_inputs,
    is_video,
    photo_scale,
    save_prediction,
    video_format,
    write_prediction,
)
from .outputs import OutputError, bar_disabled, existing_outputs, output_folder, refuse_dataset
from .transforms import image_tensor
from .video import VideoInfo, open_video, video_frames, write_video

if TYPE_CHECKING:  # torchvision is imported with the model (``model``): a bad argument fails without waiting for it
    from torchvision.models.segmentation import DeepLabV3

__all__ = [
    "PREDICTION_FORMATS",
    "load_model",
    "predict_logits",
    "predict",
    "label_mode_of",
    "classes_of",
    "encode_prediction",
    "save_prediction",
    "predict_split",
    "predict_images",
    "predict_video",
    "write_inputs",
    "plan_predictions",
    "write_predictions",
]

def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> DeepLabV3:
    """Return the model of a training checkpoint, in eval mode on ``device``, without its auxiliary head; its class
    table (names and colours: ``classes_of``), ``frame_size`` (H, W of its training frames, or None) and
    ``scale_range`` (their random rescaling) are the ones the checkpoint carries (``media.photo_scale`` uses both).

    On CUDA the process is set up for the GPU (``device.configure``) and the model is stored ``channels_last``.
    """
    from .model import checkpoint_table, model_from_state

    device = pick_device(device)
    state, meta = load_checkpoint_state(checkpoint)  # one read: weights and the config they were trained with
    config = meta.get("config") or {}
    model = model_from_state(state, checkpoint, aux_loss=False, output_stride=int(config.get("output_stride", 8)))
    model.class_table = checkpoint_table(meta, state, checkpoint)
    model.frame_size = tuple(meta["frame_size"]) if meta.get("frame_size") else None  # photos are scaled to it,
    model.scale_range = tuple(config["scale_range"]) if config.get("scale_range") else None  # and its rescaling
    configure(device)
    return model.to(device, memory_format=memory_format(device)).eval()


def _windows(size: int, crop: int, stride: int) -> list[int]:
    """Return window starts that cover 0..size with windows of ``crop`` (the last one flush with the end)."""
    if size <= crop:
        return [0]
    starts = list(range(0, size - crop, stride)) + [size - crop]
    return sorted(set(starts))


def default_stride(crop: tuple[int, int]) -> tuple[int, int]:
    """Return the sliding-window stride used when none is given: two thirds of the crop (mmsegmentation's)."""
    return max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3)


def sliding_windows(size: tuple[int, int], crop: tuple[int, int], stride: tuple[int, int] | None = None
                    ) -> list[tuple[int, int, int, int]]:
    """Return the windows ``predict(mode="slide")`` runs on a frame of ``size`` (H, W): (top, left, height,
    width) each, row by row; the last row and column are flush with the frame's edges."""
    h, w = size
    stride = stride or default_stride(crop)
    ch, cw = min(crop[0], h), min(crop[1], w)
    return [(y, x, ch, cw) for y in _windows(h, crop[0], stride[0]) for x in _windows(w, crop[1], stride[1])]


def _forward(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images)["out"].float()


def _slide(model: torch.nn.Module, images: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int],
           num_classes: int, window_batch: int = 4, fmt: torch.memory_format = torch.contiguous_format
           ) -> torch.Tensor:
    """Return float32 logits (N, K, H, W): the windows' logits summed where they overlap, divided by the count.

    The windows of a frame all have one size (the last one is flush with the edge), so ``window_batch`` of them
    run as one batch (N x window_batch images); the sums are added in the same order as one at a time.
    """
    n, _, h, w = images.shape
    windows = sliding_windows((h, w), crop, stride)
    ch, cw = windows[0][2:]
    starts = [(y, x) for y, x, _, _ in windows]
    logits = images.new_zeros((n, num_classes, h, w), dtype=torch.float32)
    counts = images.new_zeros((1, 1, h, w), dtype=torch.float32)
    for first in range(0, len(starts), window_batch):
        chunk = starts[first:first + window_batch]
        batch = torch.cat([images[:, :, y:y + ch, x:x + cw] for y, x in chunk]).contiguous(memory_format=fmt)
        out = _forward(model, batch)
        for i, (y, x) in enumerate(chunk):
            logits[:, :, y:y + ch, x:x + cw] += out[i * n:(i + 1) * n]
            counts[:, :, y:y + ch, x:x + cw] += 1
    return logits / counts


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, *, mode: str = "whole",
                   crop: tuple[int, int] = (512, 1024), stride: tuple[int, int] | None = None,
                   scales: Sequence[float] = (1.0,), flip: bool = False, window_batch: int = 4) -> torch.Tensor:
    """Return float32 class scores (N, K, H, W) at the input resolution for images (N, 3, H, W): normalised
    float32, or uint8 pixels (normalised on the model's device).

    ``mode="whole"`` runs the frame at once; ``mode="slide"`` runs overlapping ``crop`` windows
    (``stride`` defaults to two thirds of the crop), ``window_batch`` of them per forward pass, and averages
    their logits where they overlap. Several ``scales`` and/or ``flip`` average the softmax probabilities of
    every resized and mirrored view (test-time augmentation); with one scale and no flip, logits are returned.
    On CUDA, the forward passes run under autocast (``device.autocast_dtype``).
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {mode!r}")
    if window_batch < 1:
        raise ValueError(f"window_batch must be at least 1, got {window_batch}")
    model.eval()
    device = next(model.parameters()).device
    fmt = memory_format(device)
    images, _ = to_device(images, None, device, fmt)
    h, w = images.shape[-2:]
    stride = stride or default_stride(crop)
    num_classes = len(classes_of(model))  # a model of ours or an ONNX one (``export.OnnxModel``)
    augmented = len(scales) > 1 or flip or scales[0] != 1.0
    total = None
    with autocast(device, autocast_dtype(device)):
        for scale in scales:
            scaled = images if scale == 1.0 else F.interpolate(
                images, scale_factor=scale, mode="bilinear", align_corners=False)
            for mirrored in ((False, True) if flip else (False,)):
                view = scaled.flip(-1) if mirrored else scaled
                if mode == "whole":
                    out = _forward(model, view)
                else:
                    out = _slide(model, view, crop, stride, num_classes, window_batch, fmt)
                if mirrored:
                    out = out.flip(-1)
                if out.shape[-2:] != (h, w):
                    out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
                if augmented:
                    out = out.softmax(dim=1)
                total = out if total is None else total + out
    return total


def predict(model: torch.nn.Module, images: torch.Tensor, **kwargs) -> torch.Tensor:
    """Return label maps (N, H, W) int64 for images (normalised, or uint8): the model's class indices, i.e.
    trainIds for a 19-class model and labelIds for a 34-class one (see ``label_mode_of``); options (``mode``,
    ``crop``, ``stride``, ``scales``, ``flip``, ``window_batch``) as ``predict_logits``."""
    return predict_logits(model, images, **kwargs).argmax(dim=1)


def label_mode_of(model: torch.nn.Module) -> str:
    """Return what a model's class indices are: "trainId" (19 classes) or "labelId" (34, the original script)."""
    k = model.classifier[-1].out_channels
    for mode in LABEL_MODES:
        if num_classes(mode) == k:
            return mode
    raise ValueError(f"the model predicts {k} classes; Cityscapes prediction files need "
                     f"{' or '.join(f'{num_classes(m)} ({m}s)' for m in LABEL_MODES)}")


def classes_of(model: torch.nn.Module) -> ClassTable:
    """Return the class table of a model: the one ``load_model`` read from its checkpoint, else Cityscapes' for its
    class count (19 trainIds, 34 label ids)."""
    table = getattr(model, "class_table", None)
    return table if table is not None else ClassTable.cityscapes(label_mode_of(model))


class _ImageFiles(torch.utils.data.Dataset):
    """Image files as uint8 (3, H, W) tensors; an unreadable file gives its DatasetError as the item.
    ``photos``: any image converted to 8-bit RGB (``read_image(strict=False)``), not only a dataset's frames."""

    def __init__(self, paths: Sequence[Path], photos: bool = False) -> None:
        self.paths = list(paths)
        self.photos = photos

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | DatasetError:
        try:
            image = read_image(self.paths[index], strict=not self.photos)
        except DatasetError as err:
            # Returned, not raised: a DataLoader re-raises a worker's error with the worker's traceback in its
            # message; the caller raises this one as it is, the same one line with or without workers.
            return err
        return image_tensor(image)


def _collate_one(batch: list) -> torch.Tensor | DatasetError:
    """Return a batch of one: the image as (1, 3, H, W), or the item's DatasetError."""
    (item,) = batch
    return item if isinstance(item, DatasetError) else item[None]


def _scales(model, size: Sequence[int], scale: float | None, scales: Sequence[float]) -> tuple[float, ...]:
    """Return the scales to predict a picture of ``size`` (H, W) at: ``scales`` times ``scale``, or (None) times the
    factor that brings it to the pixel scale of the model's training frames (``media.photo_scale``)."""
    factor = scale if scale is not None else \
        photo_scale(size, getattr(model, "frame_size", None), getattr(model, "scale_range", None))
    return tuple(s * factor for s in scales)


def write_predictions(model, items: Iterable[tuple[Path, Path]], fmt: str, progress: bool | None, desc: str,
                      num_workers: int | None = None, photos: bool = False, scale: float | None = 1.0,
                      legend: bool = False, **kwargs) -> list[Path]:
    """Return the prediction files written for (image, output) pairs, in order: decoded by DataLoader workers
    (``num_workers``; None: one per spare core, at most 4), predicted, then encoded and written by a few threads.

    A dataset's frame that cannot be read stops the work there (``check`` names them all). ``photos`` (your own
    images, in any format ``read_image(strict=False)`` converts): one that cannot be read is named on stderr and
    skipped, the others are predicted, then a DatasetError says how many were skipped (an image given alone:
    its own error, at once).

    ``scale``: the factor images are resized by before the model sees them, the prediction brought back to their
    own size (None: each photo to the pixel scale of the model's training frames, ``media.photo_scale``).
    ``fmt`` and ``legend`` as ``media.encode_prediction``."""
    from tqdm.auto import tqdm

    items = list(items)
    if not items:
        return []
    device = next(model.parameters()).device
    table = classes_of(model)
    encode_prediction(np.zeros((1, 1), np.uint8), fmt, table, np.zeros((1, 1, 3), np.uint8))  # refused now if bad
    scales = kwargs.pop("scales", (1.0,))
    num_workers = min(default_num_workers(1, most=4, reserve=1) if num_workers is None else num_workers, len(items))
    loader = torch.utils.data.DataLoader(_ImageFiles([image for image, _ in items], photos), batch_size=1,
                                         num_workers=num_workers, collate_fn=_collate_one,
                                         pin_memory=device.type == "cuda",
                                         multiprocessing_context=worker_context() if num_workers else None)
    writers = max(1, min(4, cpu_cores() // 2))
    written: list[Path] = []
    skipped = 0
    pending: deque[Future] = deque()
    pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="save_prediction")
    batches = iter(loader)
    try:
        with tqdm(total=len(items), desc=desc, disable=bar_disabled(progress)) as bar:
            for image, (_, out_path) in zip(batches, items):
                if isinstance(image, DatasetError):
                    if not photos or len(items) == 1:
                        raise image
                    tqdm.write(f"error: {image}; skipped", file=sys.stderr)
                    skipped += 1
                    bar.update()
                    continue
                # uint8 class indices (at most 34 classes): an eighth of int64's bytes to copy back
                pred = predict(model, image, scales=_scales(model, image.shape[-2:], scale, scales), **kwargs)
                pred = pred[0].to(torch.uint8).cpu()
                picture = image[0].permute(1, 2, 0).numpy() if fmt == "overlay" else None
                if len(pending) >= 2 * writers:  # bounded: memory stays flat however fast the model is
                    written.append(pending.popleft().result())
                pending.append(pool.submit(write_prediction, pred, out_path, fmt, table, picture, legend))
                bar.update()
            while pending:
                written.append(pending.popleft().result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # Decoding workers end here, also after an error: left to the interpreter's exit, they can race it
        # (multiprocessing's resource tracker then prints warnings after the one-line error).
        getattr(batches, "_shutdown_workers", lambda: None)()
    if skipped:
        raise DatasetError(f"{skipped} of {len(items)} images could not be read and were skipped (each named "
                           f"above); the other {len(written)} predictions were written")
    return written


def _check_outputs(out_dir: Path, items: list[tuple[Path, Path]], data_root: str | Path | None,
                   overwrite: bool) -> None:
    """Refuse, before anything is written: an output folder in a dataset (or that is a file), an output that
    would replace an input image, two inputs with one output, an existing file unless ``overwrite``."""
    output_folder(out_dir, data_root=data_root, option="--out", create=False)
    inputs = {image.resolve() for image, _ in items}  # files: one set, looked up once per output
    seen: dict[Path, Path] = {}
    for image, out in items:
        key = out.resolve()
        if key in inputs:
            raise OutputError(f"{out}: the prediction of {image} would replace an input image; choose another --out")
        if key in seen:
            raise OutputError(f"{out}: both {seen[key]} and {image} would be written there; "
                              f"rename one or predict them separately")
        seen[key] = image
    existing_outputs([out for _, out in items], overwrite)


def _split_items(data_root: str | Path, split: str, out_dir: str | Path) -> list[tuple[Path, Path]]:
    """Cityscapes: ``OUT/{city}/{image name}`` (the official evaluator's names); a plain folder: ``OUT/<name>.png``
    (an index mask's name)."""
    out_dir = Path(out_dir)
    if layout_of(data_root) == "folder":
        return [(s.image_path, out_dir / f"{s.name}.png") for s in find_folder_samples(data_root, split)]
    return [(s.image_path, out_dir / s.city / s.image_path.name) for s in find_samples(data_root, split)]


def plan_predictions(out_dir: str | Path, *, images: Sequence[str | Path] | None = None,
                     data_root: str | Path | None = None, split: str = "val", overwrite: bool = False
                     ) -> list[tuple[Path, Path]]:
    """Return (input image, output file) pairs for ``images`` (files and folders) or, without them, the frames of
    ``split`` of ``data_root``, refusing before anything is written what ``predict_split`` and ``predict_images``
    refuse (``outputs.OutputError``)."""
    if images:
        items = [(path, Path(out_dir) / name) for path, name in find_inputs(images)]
        _check_outputs(Path(out_dir), items, None, overwrite)
    else:
        items = _split_items(data_root, split, out_dir)
        _check_outputs(Path(out_dir), items, data_root, overwrite)
    return items


def predict_split(model: torch.nn.Module, data_root: str | Path, split: str, out_dir: str | Path,
                  fmt: str = "labelIds", progress: bool | None = True, num_workers: int | None = None,
                  overwrite: bool = False, **kwargs) -> list[Path]:
    """Write one prediction per frame of a split: ``OUT/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` for Cityscapes,
    ``OUT/<name>.png`` for a plain folder of your own (``fmt="index"`` there: class indices, as its masks hold
    them); return the files written, in frame order.

    The names are the ones the official evaluator and the evaluation server look for. Works on the
    test split too (that is how a submission is made); scoring it is another matter. ``num_workers``: decoding
    processes (None: up to 4, one core left free; 0: decode in this process); other options as ``predict``.
    Refused before anything is written (``outputs.OutputError``): ``out_dir`` inside a dataset, and files that
    exist already unless ``overwrite``.
    """
    items = plan_predictions(out_dir, data_root=data_root, split=split, overwrite=overwrite)
    return write_predictions(model, items, fmt, progress, f"predict {split}", num_workers,
                             photos=layout_of(data_root) == "folder", **kwargs)


def predict_video(model: torch.nn.Module, path: str | Path, out_path: str | Path, fmt: str = "overlay", *,
                  scale: float | None = None, legend: bool = False, progress: bool | None = True,
                  **kwargs) -> VideoInfo:
    """Predict every frame of a video and write ``out_path`` (MP4) with the same frame count, frame size (an odd side
    rounded down to even) and frame rate, in ``color`` or ``overlay``; return what was written. ``scale`` as
    ``write_predictions`` (None: the frames brought to the pixel scale of the model's training frames); other
    options as ``predict``. ``out_path`` inside a dataset is refused; ``plan_predictions`` checks the rest."""
    from tqdm.auto import tqdm

    fmt = video_format(fmt, path)
    refuse_dataset(Path(out_path).parent)
    table = classes_of(model)
    capture, info = open_video(path)
    scales = _scales(model, info.size, scale, kwargs.pop("scales", (1.0,)))

    def pictures(frames: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
        with tqdm(total=info.frames, desc=f"predict {Path(path).name}", unit="frame",
                  disable=bar_disabled(progress)) as bar:
            for frame in frames:
                pred = predict(model, image_tensor(frame)[None], scales=scales, **kwargs)[0].to(torch.uint8).cpu()
                yield encode_prediction(pred.numpy(), fmt, table, frame, legend)
                bar.update()

    frames = video_frames(capture)
    try:
        count = write_video(pictures(frames), out_path, info.fps, info.size)
    finally:  # also after an error: the decoding thread ends and the file is closed now, not at garbage collection
        frames.close()
        capture.release()
    if count == 0:
        raise DatasetError(f"{path}: the video has no frames OpenCV can decode")
    return VideoInfo(count, info.size, info.fps)


def write_inputs(model: torch.nn.Module, items: Sequence[tuple[Path, Path]], fmt: str,
                 progress: bool | None = True, video_fmt: str | None = None, **kwargs) -> list[Path]:
    """Write the predictions of ``plan_predictions``' (input, output) pairs of images and videos: the images in
    ``fmt`` (``write_predictions``), each video in ``video_fmt`` (``media.video_format``: overlay by default), a
    video in a format it cannot take refused before anything is written. Return the files written, images first;
    images that could not be read are named as they come, and their DatasetError is raised after the videos."""
    videos = [(src, out) for src, out in items if is_video(src)]
    for src, _ in videos:
        video_format(video_fmt, src)
    images = [(src, out) for src, out in items if not is_video(src)]
    options = {k: v for k, v in kwargs.items() if k != "num_workers"}
    written, failed = [], None
    try:
        written = write_predictions(model, images, fmt, progress, "predict", photos=True, **kwargs) if images else []
    except DatasetError as err:
        failed = err
    for src, out in videos:
        predict_video(model, src, out, video_fmt, progress=progress, **options)
        written.append(out)
    if failed is not None:
        raise failed
    return written


def predict_images(model: torch.nn.Module, paths: Sequence[str | Path], out_dir: str | Path,
                   fmt: str = "color", progress: bool | None = True, overwrite: bool = False,
                   scale: float | None = None, video_fmt: str | None = None, **kwargs) -> list[Path]:
    """Write one prediction per image file, ``OUT/<name>.png``, and per video file, ``OUT/<stem>.mp4`` (a folder's
    sub-folders kept); return the files written: images, then videos (``write_inputs``).

    Images in any format OpenCV reads are converted to 8-bit RGB (``data.read_image(strict=False)``); one that does
    not decode completely is named and skipped, and a DatasetError says so at the end. Videos are written in
    ``video_fmt`` (default ``fmt``): ``color`` or ``overlay``. ``scale`` (None: each picture brought to the pixel
    scale of the model's training frames), ``legend`` and ``num_workers`` as ``write_predictions``; other options as
    ``predict``. Refused before anything is written (``outputs.OutputError``): ``out_dir`` inside a dataset, an
    output that would replace an input, two inputs with one output name, files that exist unless ``overwrite``.
    """
    items = plan_predictions(out_dir, images=paths, overwrite=overwrite)
    return write_inputs(model, items, fmt, progress, video_fmt=video_fmt or fmt, scale=scale, **kwargs)
