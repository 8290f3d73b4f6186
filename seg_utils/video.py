"""Video files: a clip read frame by frame with OpenCV (one-line errors for what cannot be read), and an MP4
written frame by frame, atomically. ``predictions.predict_video`` runs a model over a clip with them.

The MP4 written holds pictures only: no audio track is written, so a clip's sound is not copied. The user's side of
it: docs/command-line.md, "Videos".
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .data import DatasetError
from .media import VIDEO_SUFFIXES

__all__ = ["VideoInfo", "open_video", "video_frames", "write_video", "read_frames"]

FALLBACK_FPS = 30.0  # a file that states no frame rate is written at this one


@dataclass(frozen=True)
class VideoInfo:
    """What a clip's header says: frames (as the container counts them; 0 when it does not say), size (H, W), fps."""

    frames: int
    size: tuple[int, int]
    fps: float


def _quiet() -> None:
    """Silence FFmpeg's and OpenCV's own log lines (a damaged file prints several): our one line says what failed."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _container(head: bytes) -> str | None:
    """Return the container a file's first bytes announce (MP4/MOV, AVI, Matroska/WebM), or None."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "MP4/MOV"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "Matroska/WebM"
    return None


def _codec(data: bytes) -> str | None:
    """Return the video codec a container names in its first bytes (AVI's stream header, MP4's sample description,
    Matroska's codec id), or None."""
    for pattern in (rb"vids(.{4})", rb"stsd.{8}.{4}(.{4})", rb"(V_[A-Z0-9_/.]{2,30})"):
        found = re.search(pattern, data, re.DOTALL)
        if found:
            return found.group(1).decode("latin-1").strip("\x00 ") or None
    return None


def open_video(path: str | Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Return an OpenCV capture of a video file, at its first frame, and its ``VideoInfo``; raise DatasetError, one
    line naming the file, for a file that is missing or not a video, a codec OpenCV cannot decode, or no frames."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such video file")
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    kinds = ", ".join(s.lstrip(".").upper() for s in VIDEO_SUFFIXES)
    container = _container(head)
    if container is None:
        raise DatasetError(f"{path}: not a video (its bytes are no {kinds} container)")
    _quiet()
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        codec = _codec(head)
        raise DatasetError(f"{path}: OpenCV cannot decode this {container} video "
                           f"({f'codec {codec!r}' if codec else 'its codec'} is not one its FFmpeg reads, or the "
                           f"file is damaged)")
    h, w = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    frames = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))  # 0: the container does not say (a live recording)
    fps = capture.get(cv2.CAP_PROP_FPS)
    if frames == 0 or h == 0 or w == 0:  # no count in the header: a first frame says whether there is any
        first, _ = capture.read()
        capture.release()
        if not first or h == 0 or w == 0:
            raise DatasetError(f"{path}: the video has no frames")
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)  # at its first frame again
    return capture, VideoInfo(frames, (h, w), fps if math.isfinite(fps) and fps > 0 else FALLBACK_FPS)


def write_video(frames, path: str | Path, fps: float, size: tuple[int, int]) -> int:
    """Write RGB (H, W, 3) uint8 ``frames`` (any iterable) of ``size`` (H, W) as an MP4 (MPEG-4 Part 2, FourCC
    ``mp4v``, through OpenCV's FFmpeg writer) at ``path``: into a temporary file beside it, read back, and renamed
    into place only once it holds every frame (an interrupted or failed write leaves the old file, if any, and no
    half file). Return the number of frames written; with none, nothing is written and ``path`` is left as it was.

    Nothing here rounds the size, but OpenCV's FFmpeg writer stores an odd height or width one pixel smaller,
    without the last row or column (``open_video`` on the file gives the size it holds)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial.mp4")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
    count = 0
    try:
        if not writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write an MP4 video there")
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))  # OpenCV says nothing when a write fails...
            count += 1
        writer.release()
        if count:
            check = cv2.VideoCapture(str(partial), cv2.CAP_FFMPEG)  # ...so the file is read back
            stored = int(check.get(cv2.CAP_PROP_FRAME_COUNT))
            check.release()
            if stored != count:
                raise OSError(f"{path}: writing the video failed ({stored} of {count} frames stored: a full disk?)")
            os.replace(partial, path)
    finally:
        writer.release()
        partial.unlink(missing_ok=True)
    return count


def video_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """Yield a capture's frames as RGB arrays, the next one decoded in a thread while the caller works on this one
    (OpenCV releases the GIL while it decodes); the capture is released at the end."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        try:
            pending = pool.submit(capture.read)
            while True:
                ok, frame = pending.result()
                if not ok:
                    return
                pending = pool.submit(capture.read)
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        finally:
            pending.result()  # the read in flight ends before the capture is released
            capture.release()


def read_frames(path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """Return a video's frames as RGB arrays (the first ``limit`` of them): for looking at a clip, or a test."""
    frames = video_frames(open_video(path)[0])
    try:
        return list(itertools.islice(frames, limit))
    finally:
        frames.close()  # the capture is released, also when it stops at ``limit``
