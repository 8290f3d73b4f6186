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

import cv2
import numpy as np
import torch

from .classes import ClassTable
from .device import cpu_cores, default_num_workers, model_device, worker_context
from .images import IMAGE_SUFFIXES, DatasetError, read_image
from .inference import classes_of, photo_scale, predict
from .layouts import Layout, open_layout
from .loaders import ErrorsAsValues, collate
from .media import PICTURE_FORMATS, check_format, encode_prediction
from .outputs import OutputError, atomic_write, bar_disabled, existing_outputs, output_folder, refuse_dataset
from .transforms import image_tensor
from .video import VIDEO_SUFFIXES, VideoInfo, VideoReader, VideoWriter, is_video, video_format

__all__ = ["predict_split", "predict_images", "predict_video", "write_inputs", "plan_predictions",
           "write_predictions", "save_prediction", "find_inputs", "default_format"]


class _ImageFiles(torch.utils.data.Dataset):
    """Image files as uint8 (3, H, W) tensors. ``photos``: any image converted to 8-bit RGB
    (``read_image(strict=False)``), not only a dataset's frames."""

    def __init__(self, paths: Sequence[Path], photos: bool = False) -> None:
        self.paths = list(paths)
        self.photos = photos

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return image_tensor(read_image(self.paths[index], strict=not self.photos))


def _scales(model, size: Sequence[int], scale: float | None, scales: Sequence[float]) -> tuple[float, ...]:
    """Return the scales to predict a picture of ``size`` (H, W) at: ``scales`` times ``scale``, or (None) times the
    factor that brings it to the pixel scale of the model's training frames (``inference.photo_scale``)."""
    factor = scale if scale is not None else photo_scale(size, model.info.frame_size, model.info.scale_range)
    return tuple(s * factor for s in scales)


def write_predictions(model, items: Iterable[tuple[Path, Path]], fmt: str, *, photos: bool = False,
                      scale: float | None = 1.0, scales: Sequence[float] = (1.0,), legend: bool = False,
                      progress: bool | None = True, desc: str = "predict", num_workers: int | None = None,
                      **options) -> list[Path]:
    """Return the prediction files written for (image, output) pairs, in order: decoded by DataLoader workers
    (``num_workers``; None: one per spare core, at most 4), predicted, then encoded and written by a few threads.

    A dataset's frame that cannot be read stops the work there (``check`` names each such frame). ``photos`` (your own
    images, in any format ``read_image(strict=False)`` converts): one that cannot be read is named on stderr and
    skipped, the others are predicted, then a DatasetError says how many were skipped (an image given alone:
    its own error, at once).

    ``scale``: the factor images are resized by before the model sees them, the prediction brought back to their
    own size (None: each photo to the pixel scale of the model's training frames, ``inference.photo_scale``), times
    each of ``scales`` (test-time augmentation). ``fmt`` and ``legend`` as ``media.encode_prediction``; ``options``
    (``mode``, ``crop``, ``stride``, ``flip``, ``window_batch``) as ``inference.predict``."""
    from tqdm.auto import tqdm

    items = list(items)
    if not items:
        return []
    device = model_device(model)
    table = check_format(fmt, classes_of(model))  # a format the model's classes cannot take: refused now
    num_workers = min(default_num_workers(1, most=4, reserve=1) if num_workers is None else num_workers, len(items))
    loader = torch.utils.data.DataLoader(ErrorsAsValues(_ImageFiles([image for image, _ in items], photos)),
                                         batch_size=1, num_workers=num_workers, collate_fn=collate,
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
                pred = predict(model, image, scales=_scales(model, image.shape[-2:], scale, scales), **options)
                pred = pred[0].to(torch.uint8).cpu()
                picture = image[0].permute(1, 2, 0).numpy() if fmt == "overlay" else None
                if len(pending) >= 2 * writers:  # bounded: memory stays flat however fast the model is
                    written.append(pending.popleft().result())
                pending.append(pool.submit(_write_png, pred, out_path, fmt, table, picture, legend))
                bar.update()
            while pending:
                written.append(pending.popleft().result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # Decoding workers end here, also after an error (the iterator's last reference): left to the interpreter's
        # exit, they can race it (multiprocessing's resource tracker then prints warnings after the one-line error).
        del batches
    if skipped:
        raise DatasetError(f"{skipped} of {len(items)} images could not be read and were skipped (each named "
                           f"above); the other {len(written)} predictions were written")
    return written


def save_prediction(pred: np.ndarray | torch.Tensor, path: str | Path, fmt: str = "labelIds",
                    classes: str | ClassTable = "trainId", image: np.ndarray | None = None,
                    legend: bool = False) -> Path:
    """Write a label map (class indices of ``classes``: trainIds by default) as a PNG in the given format
    (``media.encode_prediction``; written whole, then renamed into place) and return its path; a path inside a
    dataset is refused (``outputs.OutputError``). It replaces ``path`` if it exists: ``predict_split`` and
    ``predict_images``, which write through it, refuse existing files unless told."""
    path = Path(path)
    refuse_dataset(path.parent)
    return _write_png(pred, path, fmt, classes, image, legend)


def _write_png(pred, path: Path, fmt: str, classes, image, legend: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = encode_prediction(pred, fmt, classes, image, legend)
    if encoded.ndim == 3:
        encoded = cv2.cvtColor(encoded, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", encoded)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    atomic_write(path, lambda f: f.write(data.tobytes()), fsync=False)  # a prediction can be made again
    return path


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


def default_format(model: torch.nn.Module, layout: Layout | None = None) -> str:
    """Return the format ``predict`` writes when none is given: for a model of Cityscapes' classes, what the folder's
    scorer reads (``Layout.prediction_format``; labelIds, the official format, for photos); class indices (``index``)
    for a model of other classes."""
    if classes_of(model).cityscapes_mode is None:
        return "index"
    return layout.prediction_format if layout is not None else "labelIds"


def _plan_split(data_root: str | Path, split: str, out_dir: str | Path, overwrite: bool
                ) -> tuple[Layout, list[tuple[Path, Path]]]:
    """Return the layout of ``data_root`` and (frame, where its prediction goes) for a split, checked: Cityscapes
    ``OUT/{city}/{image name}`` (the official evaluator's names), a plain folder ``OUT/<name>.png`` (an index
    mask's name): ``Layout.prediction_path``."""
    layout = open_layout(data_root)
    items = [(s.image_path, layout.prediction_path(s, Path(out_dir))) for s in layout.samples(split)]
    _check_outputs(Path(out_dir), items, data_root, overwrite)
    return layout, items


def plan_predictions(out_dir: str | Path, *, images: Sequence[str | Path] | None = None,
                     data_root: str | Path | None = None, split: str = "val", overwrite: bool = False,
                     video_fmt: str | None = None) -> list[tuple[Path, Path]]:
    """Return (input image, output file) pairs for ``images`` (files and folders) or, without them, the frames of
    ``split`` of ``data_root``, refusing before anything is written what ``predict_split`` and ``predict_images``
    refuse (``outputs.OutputError``): also a video that cannot be read, or not in ``video_fmt``."""
    if images:
        items = [(path, Path(out_dir) / name) for path, name in find_inputs(images)]
        _check_outputs(Path(out_dir), items, None, overwrite)
        for src, _ in items:
            if is_video(src):
                video_format(video_fmt, src)
                VideoReader(src).close()  # not a video, no frames, a codec OpenCV cannot read: said now
    else:
        items = _plan_split(data_root, split, out_dir, overwrite)[1]
    return items


def predict_split(model: torch.nn.Module, data_root: str | Path, split: str, out_dir: str | Path,
                  fmt: str | None = None, progress: bool | None = True, num_workers: int | None = None,
                  overwrite: bool = False, **options) -> list[Path]:
    """Write one prediction per frame of a split: ``OUT/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` for Cityscapes,
    ``OUT/<name>.png`` for a plain folder of your own; return the files written, in frame order.

    ``fmt`` None: ``default_format``, what the folder's scorer reads: ``labelIds`` for Cityscapes (the official
    submission format), ``index`` for a plain folder (class indices, as its masks hold them). The names are
    the ones the official evaluator and the evaluation server look for. Works on the test split too (that is how a
    submission is made); scoring it is another matter. ``num_workers``: decoding processes (None: up to 4, one core
    left free; 0: decode in this process); other options (``scale``, ``scales``, ``legend``, and ``predict``'s) as
    ``write_predictions``. Refused before anything is written (``outputs.OutputError``): ``out_dir`` inside a dataset,
    and files that exist already unless ``overwrite``.
    """
    layout, items = _plan_split(data_root, split, out_dir, overwrite)
    return write_predictions(model, items, fmt or default_format(model, layout), photos=layout.photos,
                             progress=progress, desc=f"predict {split}", num_workers=num_workers, **options)


def predict_video(model: torch.nn.Module, path: str | Path, out_path: str | Path, fmt: str | None = "overlay", *,
                  scale: float | None = None, scales: Sequence[float] = (1.0,), legend: bool = False,
                  progress: bool | None = True, **options) -> VideoInfo:
    """Predict every frame of a video and write ``out_path`` (MP4, ``video.VideoWriter``) with the same frame count,
    frame size and frame rate, in ``color`` or ``overlay`` (None: overlay); return what the written file holds, read
    back from it (an odd side comes back one pixel shorter: OpenCV's writer drops its last row or column). ``scale``
    as ``write_predictions`` (None: the frames brought to the pixel scale of the model's training frames); other
    options as ``predict``. ``out_path`` inside a dataset is refused; ``plan_predictions`` checks the rest."""
    from tqdm.auto import tqdm

    fmt = video_format(fmt, path)
    refuse_dataset(Path(out_path).parent)
    table = classes_of(model)
    with VideoReader(path) as video:
        info = video.info
        factors = _scales(model, info.size, scale, scales)
        with VideoWriter(out_path, info.fps, info.size) as sink, \
                tqdm(total=info.frames, desc=f"predict {Path(path).name}", unit="frame",
                     disable=bar_disabled(progress)) as bar:
            for frame in video:
                pred = predict(model, image_tensor(frame)[None], scales=factors, **options)[0].to(torch.uint8).cpu()
                sink.write(encode_prediction(pred.numpy(), fmt, table, frame, legend))
                bar.update()
    if sink.count == 0:
        raise DatasetError(f"{path}: the video has no frames OpenCV can decode")
    with VideoReader(out_path) as written:  # what the file holds, as a player reads it
        return written.info


def write_inputs(model: torch.nn.Module, items: Sequence[tuple[Path, Path]], fmt: str,
                 progress: bool | None = True, video_fmt: str | None = None, num_workers: int | None = None,
                 **options) -> list[Path]:
    """Write the predictions of ``plan_predictions``' (input, output) pairs of images and videos: the images in
    ``fmt`` (``write_predictions``, as photos), each video in ``video_fmt`` (``video.video_format``: overlay by
    default), a video in a format it cannot take refused before anything is written. Return the files written,
    images first; images that could not be read are named as they come, and their DatasetError is raised after the
    videos. ``options`` as ``write_predictions``'."""
    videos = [(src, out) for src, out in items if is_video(src)]
    for src, _ in videos:
        video_format(video_fmt, src)
    images = [(src, out) for src, out in items if not is_video(src)]
    written, failed = [], None
    try:
        written = write_predictions(model, images, fmt, photos=True, progress=progress, num_workers=num_workers,
                                    **options) if images else []
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
                   scale: float | None = None, video_fmt: str | None = None, **options) -> list[Path]:
    """Write one prediction per image file, ``OUT/<name>.png``, and per video file, ``OUT/<stem>.mp4`` (a folder's
    sub-folders kept); return the files written: images, then videos (``write_inputs``).

    Images in any format OpenCV reads are converted to 8-bit RGB (``images.read_image(strict=False)``); one that does
    not decode completely is named and skipped, and a DatasetError says so at the end. Videos are written in
    ``video_fmt``: ``color`` or ``overlay`` (default: ``fmt`` where it is one of them, else overlay). ``scale``
    (None: each picture brought to the pixel
    scale of the model's training frames), ``legend`` and ``num_workers`` as ``write_predictions``; other options as
    ``predict``. Refused before anything is written (``outputs.OutputError``): ``out_dir`` inside a dataset, an
    output that would replace an input, two inputs with one output name, files that exist unless ``overwrite``, a
    video that cannot be read.
    """
    video_fmt = video_fmt or (fmt if fmt in PICTURE_FORMATS else None)  # None: overlay (``video.video_format``)
    items = plan_predictions(out_dir, images=paths, overwrite=overwrite, video_fmt=video_fmt)
    return write_inputs(model, items, fmt, progress, video_fmt=video_fmt, scale=scale, **options)


def find_inputs(paths: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """Return (input file, its output name relative to the output folder) for image and video files and for the
    images and videos found in folders (their sub-folders kept): ``<name>.png`` for an image, ``<stem>.mp4`` for a
    video. Raise DatasetError for a path that is neither, or a folder with none."""
    kinds = ", ".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
                           and not p.name.startswith("."))  # hidden: e.g. a video being written there
            if not files:
                raise DatasetError(f"{path}: no images or videos found (expected files ending in {kinds})")
            found.extend((p, _output_name(p.relative_to(path))) for p in files)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
                raise DatasetError(f"{path}: not an image or video file (expected a name ending in {kinds})")
            found.append((path, _output_name(Path(path.name))))
        else:
            raise DatasetError(f"{path}: no such image or video file or folder")
    return found


def _output_name(relative: Path) -> Path:
    return relative.with_suffix(".mp4" if is_video(relative) else ".png")


