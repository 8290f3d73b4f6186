"""An offline stand-in for Cityscapes: synthetic street scenes in the exact official layout and formats.

The real dataset needs a login and 11 GB. This module writes a small set that every notebook and test
can read with the very code that reads the real one::

    leftImg8bit/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png     RGB 8-bit
    gtFine/{split}/{city}/{stem}_gtFine_polygons.json                            official polygon format
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png                             8-bit, label ids 0..33
    gtFine/{split}/{city}/{stem}_gtFine_color.png                                RGBA, official palette
    gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png                          16-bit, id*1000+k

Each frame is a scene built in 3-D (a pinhole camera 1.3 m above a street, so everything shrinks towards
a vanishing point) as a list of labelled polygons in drawing order, back to front. The polygons are the
ground truth: they go into the json file, and the three label images are drawn from that json by the
official ``cityscapesscripts`` functions, exactly as the Cityscapes team drew theirs. The RGB image is
painted from the same polygons in the same order with the same PIL rasteriser, so every image pixel
shows the class its label says. ``_gtFine_labelTrainIds.png`` is not written, as the real download
does not ship it: ``csCreateTrainIdLabelImgs`` draws it from the json files on either set.

The test split gets normal images but dummy labels holding only void regions, like the real one.

``sidewalk`` writes a stand-in for *your own* data instead: a delivery robot's view of a sidewalk, 6 classes of
its own, in the plain ``images/`` + ``masks/`` + ``classes.json`` layout (``seg_utils.folder``), with RGB colour
masks, a 4:3 camera and some JPEG photos.

The package, by idea: ``folders`` (frame names, writing and checking set folders), ``layout`` (what stands
where in a street scene), ``painters`` (the texture of each class), ``scene`` (the camera and the polygons),
``render`` (painting the image and the json annotation of one frame).
"""

from __future__ import annotations

from .folders import (
    FORMAT_VERSION,
    MARKER_NAME,
    SPLIT_CITIES,
    ensure_synthetic,
    frame_names,
    write_synthetic_cityscapes,
)
from .render import VOID_LABELS, render_frame
from .sidewalk import SIDEWALK_CLASSES, ensure_synthetic_folder, write_synthetic_folder

__all__ = [
    "SPLIT_CITIES",
    "FORMAT_VERSION",
    "MARKER_NAME",
    "VOID_LABELS",
    "write_synthetic_cityscapes",
    "ensure_synthetic",
    "render_frame",
    "frame_names",
    "SIDEWALK_CLASSES",
    "write_synthetic_folder",
    "ensure_synthetic_folder",
]
