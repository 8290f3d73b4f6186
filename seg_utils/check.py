"""``check``: a whole dataset folder validated, each problem named in one line (frames per split and city, unpaired
files, corrupt PNGs, label ids outside the table, size mismatches; for each image and label pair the first fault that
stops it being read), for ``python -m seg_utils check ROOT``.

Either layout (``layouts``): Cityscapes, and a plain folder of your own (``folder``: its class table, photos
without masks and masks without photos, JPEG masks, mask values or colours outside the table, sizes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .classes import ClassTableError
from .images import DatasetError
from .layouts import SPLITS, open_layout

__all__ = ["CheckReport", "check_dataset"]


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


@dataclass
class CheckReport:
    """What ``check_dataset`` found: frames per split and city, and one line per problem."""

    root: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """Return the counts per split and city as printable lines."""
        lines = []
        for split, cities in self.counts.items():
            total = sum(cities.values())
            if list(cities) == [""]:  # a plain folder: no cities
                lines.append(f"{split}: {_count(total, 'frame')}")
                continue
            lines.append(f"{split}: {_count(total, 'frame')} in {_count(len(cities), 'city', 'cities')}")
            lines.extend(f"  {city}: {n}" for city, n in sorted(cities.items()))
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def check_dataset(root: str | Path, splits: tuple[str, ...] = SPLITS, decode: bool = True,
                  progress: bool = False, classes: str | Path | None = None) -> CheckReport:
    """Return a report on a dataset folder of either layout: frames per split (and city), and the problems found
    (every naming and pairing problem; for each pair, the first decoding fault).

    With ``decode`` every file is decoded (corrupt files, label ids or mask values outside the table, size
    mismatch); without it only names and pairing are checked. ``classes``: a plain folder's class table file
    (default: its ``classes.json``).
    """
    root = Path(root)
    report = CheckReport(root)
    try:
        layout = open_layout(root, classes)
        layout.require()  # a missing half, an empty folder: one line, not one per split
    except (DatasetError, ClassTableError) as err:
        report.problems.append(str(err))
        return report
    if layout.table.cityscapes_mode is None:  # your own classes: say which were read
        report.notes.append(f"{len(layout.table)} classes: {', '.join(layout.table.names)}")
    to_decode = []
    for split in splits:
        if split in layout.optional_splits and not layout.has_split(split):
            report.notes.append(layout.optional_splits[split])
            continue
        samples, problems = layout.scan(split)
        report.problems.extend(problems)
        if samples:
            report.counts[split] = dict(sorted(Counter(s.city for s in samples).items()))
        to_decode.extend(samples)
    if decode:
        from tqdm.auto import tqdm

        for sample in tqdm(to_decode, desc="decoding", disable=None if progress else True, leave=False):
            report.problems.extend(layout.decode_problems(sample))
    return report
