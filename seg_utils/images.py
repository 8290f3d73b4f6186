"""Reading image files: photos and frames, label maps, headers; each fault one line naming the file.

The one reader of photos and frames (``read_image``), of label and prediction PNGs (``read_label``) and of image
headers (``header_size``), for every layout of dataset folder (``layouts``) and for your own photos. Nothing here
knows a layout: Cityscapes' names are ``cityscapes``, a plain folder's ``folder``.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import cv2
import numpy as np

try:  # libspng decodes RGB PNG frames faster than OpenCV's libpng (bench_data.py: libspng_speedup_vs_opencv)
    import pyspng
except ImportError:  # OpenCV decodes everything without it
    pyspng = None

__all__ = ["IMAGE_SUFFIXES", "DatasetError", "read_image", "read_label", "header_size",
           "png_format", "size_problem", "size_text"]

# The photo files the package reads (a plain folder's photos, ``predict --images``): what OpenCV decodes.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# a JPEG marker with a length (or the end): not stuffing (00), a restart (D0-D7), TEM (01) or a fill byte
_JPEG_MARKER = re.compile(rb"\xff[^\x00\x01\xd0-\xd7\xff]")

# OpenCV decodes with its own thread pool; in DataLoader workers that oversubscribes the cores.
cv2.setNumThreads(1)


class DatasetError(ValueError):
    """A dataset folder or file is not what its layout expects; the message names it."""


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
    if strict and png_format(data) in ((8, 2), (8, 6)):  # 8-bit RGB or RGBA: libspng gives RGB order as stored
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


def png_format(data: bytes) -> tuple[int, int] | None:
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
    if png_format(data) == (8, 0):  # 8-bit grey: the usual file. OpenCV, not libspng: as fast on these small
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


def header_size(path: Path, photo: bool = False) -> tuple[int, int]:
    """Return an image's (width, height) from its header; a ``photo``'s as shown, its EXIF quarter turn applied (as
    ``read_image`` applies it). PIL's errors pass through."""
    from PIL import Image

    with Image.open(path) as image:
        turned = photo and image.getexif().get(0x0112) in (5, 6, 7, 8)
        return image.size[::-1] if turned else image.size


def size_problem(path: Path, image: np.ndarray, label: np.ndarray, what: str = "label") -> str | None:
    """Return the one-line problem when a label file (``path``; a ``what``) and its image differ in size, else
    None."""
    if image.shape[:2] == label.shape[:2]:
        return None
    return size_text(path, label.shape[1::-1], image.shape[1::-1], what)


def size_text(where: str | Path, label_size: tuple[int, int], image_size: tuple[int, int],
               what: str = "label") -> str:
    (lw, lh), (iw, ih) = label_size, image_size
    return f"{where}: {what} is {lw}x{lh}, its image is {iw}x{ih} (expected equal sizes)"
