"""Video files: which inputs are videos, a clip read frame by frame with OpenCV (``VideoReader``: one-line errors for
what cannot be read), and an MP4 written frame by frame, atomically (``VideoWriter``); both are context managers that
let go of their file when the block ends. ``predictions.predict_video`` runs a model over a clip with them.

The MP4 written holds pictures only: no audio track is written, so a clip's sound is not copied. The user's side of
it: docs/command-line.md, "Videos".
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .images import DatasetError
from .media import PICTURE_FORMATS

__all__ = ["VIDEO_SUFFIXES", "VideoInfo", "VideoReader", "VideoWriter", "is_video", "video_format", "write_video",
           "read_frames"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")

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


def is_video(path: str | Path) -> bool:
    """Return whether a path names a video (by its suffix: MP4, AVI, MOV, MKV, WebM)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def video_format(fmt: str | None, path: str | Path) -> str:
    """Return the format a video is written in for ``--format`` ``fmt``: ``overlay`` when none is given; ``color``
    or ``overlay`` as given; a mask format refused (ValueError naming the video): class ids do not survive a video
    codec's lossy compression."""
    if fmt is None:
        return "overlay"
    if fmt not in PICTURE_FORMATS:
        raise ValueError(f"{path}: a video is written in {' or '.join(PICTURE_FORMATS)}, not {fmt} (class ids do not "
                         f"survive a video codec's compression; predict its frames as images for masks)")
    return fmt


class VideoReader:
    """A video file opened with OpenCV, at its first frame: ``info`` (what its header says) and its frames as RGB
    arrays when iterated, the next one decoded in a thread while the caller works on this one (OpenCV releases the
    GIL while it decodes). ``with VideoReader(path) as video:`` lets go of the file at the end of the block, also
    after an error. A file that is missing or not a video, a codec OpenCV cannot decode, or no frames: one
    DatasetError line naming the file, raised on opening."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{path}: no such video file")
        with open(self.path, "rb") as f:
            head = f.read(1 << 20)
        kinds = ", ".join(s.lstrip(".").upper() for s in VIDEO_SUFFIXES)
        container = _container(head)
        if container is None:
            raise DatasetError(f"{path}: not a video (its bytes are no {kinds} container)")
        _quiet()
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            codec = _codec(head)
            raise DatasetError(f"{path}: OpenCV cannot decode this {container} video "
                               f"({f'codec {codec!r}' if codec else 'its codec'} is not one its FFmpeg reads, or the "
                               f"file is damaged)")
        h, w = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        frames = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))  # 0: the container does not say (live)
        fps = capture.get(cv2.CAP_PROP_FPS)
        if frames == 0 or h == 0 or w == 0:  # no count in the header: a first frame says whether there is any
            first, _ = capture.read()
            capture.release()
            if not first or h == 0 or w == 0:
                raise DatasetError(f"{path}: the video has no frames")
            capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)  # at its first frame again
        self.capture = capture
        self.info = VideoInfo(frames, (h, w), fps if math.isfinite(fps) and fps > 0 else FALLBACK_FPS)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the file (a second call does nothing)."""
        self.capture.release()

    def __iter__(self) -> Iterator[np.ndarray]:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
            pending = pool.submit(self.capture.read)
            try:
                while True:
                    ok, frame = pending.result()
                    if not ok:
                        return
                    pending = pool.submit(self.capture.read)
                    yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            finally:
                pending.result()  # the read in flight ends before the file can be let go of


class VideoWriter:
    """An MP4 (MPEG-4 Part 2, FourCC ``mp4v``, through OpenCV's FFmpeg writer) of RGB (H, W, 3) uint8 frames of
    ``size`` (H, W), written into a temporary file beside ``path``. ``with VideoWriter(...) as sink:`` renames it
    into place at the end of the block once it is read back holding every frame (``count``); after an error in the
    block, or with no frame written, the temporary file is removed and ``path`` left as it was: never a half file.

    Nothing here rounds the size, but OpenCV's FFmpeg writer stores an odd height or width one pixel smaller, without
    the last row or column (``VideoReader`` on the file gives the size it holds)."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f".{self.path.stem}.partial.mp4")
        self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
        self.count = 0
        if not self.writer.isOpened():
            self.writer.release()
            self.partial.unlink(missing_ok=True)
            raise OSError(f"{path}: OpenCV cannot write an MP4 video there")

    def __enter__(self) -> VideoWriter:
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB frame."""
        self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))  # OpenCV says nothing when a write fails...
        self.count += 1

    def __exit__(self, kind, error, trace) -> None:
        self.writer.release()
        try:
            if kind is None and self.count:
                check = cv2.VideoCapture(str(self.partial), cv2.CAP_FFMPEG)  # ...so the file is read back
                stored = int(check.get(cv2.CAP_PROP_FRAME_COUNT))
                check.release()
                if stored != self.count:
                    raise OSError(f"{self.path}: writing the video failed ({stored} of {self.count} frames stored: "
                                  f"a full disk?)")
                os.replace(self.partial, self.path)
        finally:
            self.partial.unlink(missing_ok=True)


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float, size: tuple[int, int]) -> int:
    """Write RGB (H, W, 3) uint8 ``frames`` (any iterable) of ``size`` (H, W) as an MP4 at ``path`` (``VideoWriter``:
    whole or not at all); return the number of frames written (none: nothing is written)."""
    with VideoWriter(path, fps, size) as sink:
        for frame in frames:
            sink.write(frame)
    return sink.count


def read_frames(path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """Return a video's frames as RGB arrays (the first ``limit`` of them): for looking at a clip, or a test."""
    with VideoReader(path) as video:
        frames = iter(video)
        try:
            return list(itertools.islice(frames, limit))
        finally:
            frames.close()  # the decoding thread ends before the file is let go of
