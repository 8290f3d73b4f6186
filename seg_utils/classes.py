"""A class table as data: the names and colours of a model's classes, in class-index order (``classes.json``).

Everything that knows a class count, name or colour (model heads, metrics, legends, colour output, class
weights) takes it from a ``ClassTable``. Cityscapes' 19 evaluated classes are one such table, built from
cityscapesscripts (``ClassTable.cityscapes()``); your own data brings its own as a small JSON file::

    {"classes": [{"name": "background", "color": [0, 0, 0]}, {"name": "road", "color": [128, 64, 128]}],
     "ignore_index": 255, "ignore_color": [255, 255, 255]}

``ignore_index`` (default 255) is the value an index mask uses for "not labelled"; ``ignore_color`` (default:
none) the colour a colour mask uses for it. In memory the package always marks ignored pixels 255
(``labels.IGNORE_INDEX``): a mask's own ignore value is translated as it is read. A checkpoint carries its table,
so a model names and colours its classes without any dataset.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .labels import IGNORE_INDEX, class_names, palette

__all__ = ["ClassTable", "ClassTableError", "CLASSES_FILE", "as_table"]

CLASSES_FILE = "classes.json"
_EXAMPLE = '{"classes": [{"name": "road", "color": [128, 64, 128]}, ...], "ignore_index": 255}'


class ClassTableError(ValueError):
    """A class table that cannot be used; the message names its file."""


def _color(value: Any, where: str) -> tuple[int, int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        raise ClassTableError(f"{where}: expected a colour [r, g, b] of integers 0..255, got {value!r}")
    return tuple(value)


def _unique(values: Sequence[Any], what: str, where: str) -> None:
    seen: dict[Any, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            shown = list(value) if isinstance(value, tuple) else repr(value)
            raise ClassTableError(f"{where}: classes {seen[value]} and {i} have the same {what} {shown} "
                                  f"(expected each {what} once)")
        seen[value] = i


@dataclass(frozen=True)
class ClassTable:
    """The classes a model predicts: ``names[i]`` and ``colors[i]`` of class index ``i``."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int = IGNORE_INDEX
    ignore_color: tuple[int, int, int] | None = None
    source: str = "the class table"  # where it was read from, for error messages (not part of its identity)

    def __post_init__(self) -> None:
        where = self.source
        if not self.names:
            raise ClassTableError(f"{where}: no classes (expected {_EXAMPLE})")
        if len(self.names) != len(self.colors):
            raise ClassTableError(f"{where}: {len(self.names)} names but {len(self.colors)} colours")
        if len(self.names) > IGNORE_INDEX:
            raise ClassTableError(f"{where}: {len(self.names)} classes; at most {IGNORE_INDEX} fit in 8-bit masks")
        for name in self.names:
            if not isinstance(name, str) or not name.strip():
                raise ClassTableError(f"{where}: class names must be non-empty strings, got {name!r}")
        _unique(self.names, "name", where)
        if not isinstance(self.ignore_index, int) or not len(self.names) <= self.ignore_index <= 255:
            raise ClassTableError(f"{where}: ignore_index must be an integer from {len(self.names)} (after the "
                                  f"last class index) to 255, got {self.ignore_index!r}")
        if self.ignore_color is not None and self.ignore_color in self.colors:
            raise ClassTableError(f"{where}: ignore_color {list(self.ignore_color)} is also the colour of class "
                                  f"{self.names[self.colors.index(self.ignore_color)]!r}")

    def __eq__(self, other: object) -> bool:  # the source is where it came from, not what it is
        return isinstance(other, ClassTable) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __len__(self) -> int:
        return len(self.names)

    def brief(self, most: int = 4) -> str:
        """The class count and the first ``most`` names, for messages: ``6: background, drivable, kerb, obstacle,
        ...``."""
        return f"{len(self)}: {', '.join(self.names[:most])}{', ...' * (len(self) > most)}"

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def palette(self) -> np.ndarray:
        """The (256, 3) uint8 colour lookup, indexable by a label map: class colours, then the ignore colour
        (black if none) at 255, the in-memory ignore value."""
        table = np.zeros((256, 3), dtype=np.uint8)
        table[: len(self)] = self.colors
        if self.ignore_color is not None:
            table[IGNORE_INDEX] = self.ignore_color
        return table

    @property
    def cityscapes_mode(self) -> str | None:
        """``"trainId"`` or ``"labelId"`` when this is a Cityscapes table (official names and colours), else None."""
        for mode in ("trainId", "labelId"):
            if self.names == class_names(mode) and np.array_equal(np.array(self.colors),
                                                                  palette(mode)[: len(self)]):
                return mode
        return None

    @classmethod
    def cityscapes(cls, mode: str = "trainId") -> ClassTable:
        """Return Cityscapes' table from cityscapesscripts: the 19 evaluated classes (``"trainId"``) or the 34 label
        ids (``"labelId"``), with the official colours."""
        names = class_names(mode)
        return cls(names, tuple(tuple(int(v) for v in c) for c in palette(mode)[: len(names)]),
                   source=f"Cityscapes ({mode}s)")

    @classmethod
    def for_count(cls, num_classes: int) -> ClassTable:
        """Return the table of a model that carries none, from its class count: Cityscapes' for 19 (trainIds) or 34
        (label ids), else ``class 0``, ``class 1``... with colours spread around the hue circle."""
        for mode in ("trainId", "labelId"):
            if len(class_names(mode)) == num_classes:
                return cls.cityscapes(mode)
        colors = tuple(tuple(int(round(255 * v)) for v in colorsys.hsv_to_rgb((0.618034 * i) % 1, 0.75, 0.9))
                       for i in range(num_classes))
        return cls(tuple(f"class {i}" for i in range(num_classes)), colors, source=f"{num_classes} numbered classes")

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "the class table") -> ClassTable:
        """Return the table of a parsed ``classes.json`` (``source`` names it in errors)."""
        where = str(source)
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise ClassTableError(f"{where}: expected a JSON object with a \"classes\" list, such as {_EXAMPLE}")
        unknown = sorted(set(data) - {"classes", "ignore_index", "ignore_color"})
        if unknown:
            raise ClassTableError(f"{where}: unknown key {unknown[0]!r} (expected classes, ignore_index, "
                                  f"ignore_color)")
        names, colors = [], []
        for i, entry in enumerate(data["classes"]):
            if not isinstance(entry, dict) or set(entry) != {"name", "color"}:
                raise ClassTableError(f"{where}: class {i} must be {{\"name\": ..., \"color\": [r, g, b]}}, "
                                      f"got {entry!r}")
            names.append(entry["name"])
            colors.append(_color(entry["color"], f"{where}: class {i} ({entry['name']!r})"))
        _unique(colors, "colour", where)  # colour masks need it (Cityscapes' 34 label ids share some colours)
        ignore_color = data.get("ignore_color")
        return cls(tuple(names), tuple(colors), data.get("ignore_index", IGNORE_INDEX),
                   None if ignore_color is None else _color(ignore_color, f"{where}: ignore_color"), where)

    @classmethod
    def load(cls, path: str | Path) -> ClassTable:
        """Return the table of a ``classes.json`` file; ClassTableError names the file when it cannot be used."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            hint = "; or pass --classes FILE" if path.name == CLASSES_FILE else ""  # a folder's own, not one given
            raise ClassTableError(f"{path}: no class table (expected a {CLASSES_FILE} such as {_EXAMPLE}{hint})"
                                  ) from None
        except (OSError, UnicodeDecodeError) as err:
            raise ClassTableError(f"{path}: cannot read this class table ({err})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ClassTableError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") \
                from None
        return cls.from_dict(data, path)

    def to_dict(self) -> dict[str, Any]:
        """Return the table as ``classes.json`` holds it (what a checkpoint stores)."""
        out: dict[str, Any] = {"classes": [{"name": n, "color": list(c)} for n, c in zip(self.names, self.colors)],
                               "ignore_index": self.ignore_index}
        if self.ignore_color is not None:
            out["ignore_color"] = list(self.ignore_color)
        return out

    def to_json(self) -> str:
        """Return the table as the text of a ``classes.json`` file: one line per class, in class-index order."""
        data = self.to_dict()
        lines = [f"    {json.dumps(c)}" for c in data.pop("classes")]
        rest = "".join(f',\n  "{key}": {json.dumps(value)}' for key, value in data.items())
        return '{\n  "classes": [\n' + ",\n".join(lines) + "\n  ]" + rest + "\n}\n"

    def save(self, path: str | Path) -> Path:
        """Write the table as a ``classes.json`` file (``to_json``); return its path."""
        path = Path(path)
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def as_table(classes: ClassTable | str | None = None) -> ClassTable:
    """Return a class table: ``classes`` itself, or Cityscapes' for a label mode name (None: ``"trainId"``)."""
    if isinstance(classes, ClassTable):
        return classes
    return ClassTable.cityscapes(classes or "trainId")
