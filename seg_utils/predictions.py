"""Writing predictions to files: every frame of a dataset split (the official evaluator's names, or a plain folder's
index masks), your own photos, and videos (``OUT/<stem>.mp4``, frame by frame).

The model side is ``inference`` (``predict``); how a prediction is encoded (label ids, colours, overlays, legends)
is ``media``; clips are read and written by ``video``; where files may go is ``outputs``. Writing a folder of
predictions is a pipeline: DataLoader workers decode the next frames, the model predicts, a few threads encode and
write the PNGs (OpenCV releases the GIL while it encodes). Everything an output would break (a dataset folder, an
input replaced, two inputs on one name, an existing file) is refused before anything is written.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .data import DatasetError, find_samples, read_image
from .datasets import layout_of
from .device import cpu_cores, default_num_workers, worker_context
from .folder import find_folder_samples
from .inference import classes_of, predict
from .media import encode_prediction, find_inputs, is_video, photo_scale, video_format, write_prediction
from .outputs import OutputError, bar_disabled, existing_outputs, output_folder, refuse_dataset
from .transforms import image_tensor
from .video import VideoInfo, open_video, video_frames, write_video

__all__ = ["predict_split", "predict_images", "predict_video", "write_inputs", "plan_predictions",
           "write_predictions"]


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

    A dataset's frame that cannot be read stops the work there (``check`` names each such frame). ``photos`` (your own
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
    """Predict every frame of a video and write ``out_path`` (MP4, ``video.write_video``) with the same frame count,
    frame size and frame rate, in ``color`` or ``overlay``; return what the written file holds, read back from it
    (an odd side comes back one pixel shorter: OpenCV's writer drops its last row or column). ``scale`` as
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
    written, stored = open_video(out_path)  # what the file holds, as a player reads it
    written.release()
    return stored


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
