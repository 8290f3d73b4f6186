"""``check``: a whole dataset folder validated, each problem named in one line (frames per split and city, unpaired
files, corrupt PNGs, label ids outside the table, size mismatches; for each image and label pair the first fault that
stops it being read), for ``python -m seg_utils check ROOT``.

Both layouts (``datasets``): Cityscapes, and a plain folder of your own (``folder``: its class table, photos
without masks and masks without photos, JPEG masks, mask values or colours outside the table, sizes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .classes import ClassTableError
from .data import (
    SPLITS,
    DatasetError,
    Sample,
    _scan,
    _size_problem,
    check_label_ids,
    check_train_ids,
    read_image,
    read_label,
    require_dataset,
)
from .datasets import cityscapes_classes, has_split, layout_of
from .folder import FOLDER_SPLITS, load_class_table, read_pair, scan_folder

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


def _check_files(sample: Sample) -> list[str]:
    problems = []
    try:
        image = read_image(sample.image_path)
    except DatasetError as err:
        problems.append(str(err))
        image = None
    checks = [(sample.label_path, check_label_ids)]
    if sample.train_ids_path is not None:
        checks.append((sample.train_ids_path, check_train_ids))
    for path, check in checks:
        try:
            label = read_label(path)
            check(label, path)
        except DatasetError as err:
            problems.append(str(err))
            continue
        problem = _size_problem(path, image, label) if image is not None else None
        if problem:
            problems.append(problem)
    return problems


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
        if layout_of(root) == "folder":
            return _check_folder(root, report, splits, decode, progress, classes)
        require_dataset(root)  # a missing folder, an empty one, the wrong one: one line, not one per split
        cityscapes_classes(root, classes)
    except (DatasetError, ClassTableError) as err:
        report.problems.append(str(err))
        return report
    to_decode = []
    for split in splits:
        if split == "test" and not has_split(root, "test"):
            report.notes.append("no test split (optional: it has no public labels)")
            continue
        samples, problems = _scan(root, split)
        report.problems.extend(problems)
        if samples:
            report.counts[split] = dict(sorted(Counter(s.city for s in samples).items()))
        to_decode.extend(samples)
    if decode:
        from tqdm.auto import tqdm

        for sample in tqdm(to_decode, desc="decoding", disable=None if progress else True, leave=False):
            report.problems.extend(_check_files(sample))
    return report



def _check_folder(root: Path, report: CheckReport, splits: tuple[str, ...], decode: bool, progress: bool,
                  classes: str | Path | None) -> CheckReport:
    """``check_dataset`` of a plain folder: its class table, then every split's names and pairs, then every file."""
    try:
        table = load_class_table(root, classes)
    except ClassTableError as err:
        report.problems.append(str(err))
        return report
    report.notes.append(f"{len(table)} classes: {', '.join(table.names)}")
    to_decode = []
    for split in (s for s in splits if s in FOLDER_SPLITS):
        if split in ("val", "test") and not has_split(root, split):
            report.notes.append("no test split (optional)" if split == "test" else
                                "no val split: training runs without validation")
            continue
        samples, problems = scan_folder(root, split)
        report.problems.extend(problems)
        if samples:
            report.counts[split] = {"": len(samples)}
        to_decode.extend(samples)
    if decode:
        from tqdm.auto import tqdm

        for sample in tqdm(to_decode, desc="decoding", disable=None if progress else True, leave=False):
            try:
                read_pair(sample, table)
            except DatasetError as err:
                report.problems.append(str(err))
    return report
