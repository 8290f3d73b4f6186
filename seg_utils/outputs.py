"""Where the package may write: the one place that decides, asked by every command and helper before it writes.

Three rules, whatever the path looks like (relative, through symlinks, ``..``):

* nothing is ever written into a dataset: a folder named as the data root, the one ``CITYSCAPES_DATASET``
  names, any folder that holds ``leftImg8bit/`` or ``gtFine/``, or a plain folder of your own (``images/`` with
  ``masks/`` or ``classes.json``), with everything below it, is read-only;
* an output never replaces an input of the same command;
* an existing file is replaced only when the caller says so (``overwrite``, ``--overwrite``).

Every refusal is one ``OutputError`` line naming the path and what to do instead, raised before anything is
written. (And the one rule for progress bars, the other thing the package writes: ``bar_disabled``.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .classes import CLASSES_FILE
from .data import IMAGE_DIR, LABEL_DIR
from .env import cityscapes_root
from .folder import IMAGES_DIR, MASKS_DIR

__all__ = ["OutputError", "dataset_holding", "refuse_dataset", "is_input", "output_file", "output_folder",
           "existing_outputs", "bar_disabled"]


class OutputError(ValueError):
    """A path cannot be written: inside a dataset, an input, an existing file, a folder of the wrong kind, or
    not writable. The message names it."""


def _known_roots(data_root: str | os.PathLike | None) -> list[Path]:
    return [Path(r) for r in (data_root, cityscapes_root()) if r is not None]


def dataset_holding(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> Path | None:
    """Return the dataset folder that ``path`` is in (or is), or None.

    A dataset folder is ``data_root``, the ``CITYSCAPES_DATASET`` folder, any folder holding ``leftImg8bit/``
    or ``gtFine/``, or one holding ``images/`` with ``masks/`` or ``classes.json`` (the plain layout, ``folder``);
    paths are compared resolved, so a symlink or a relative path into one is found too.
    """
    target = Path(path).resolve()
    for root in _known_roots(data_root):
        # the root, and its two halves where they are symlinks to folders elsewhere
        if any(target.is_relative_to(p.resolve()) for p in (root, root / IMAGE_DIR, root / LABEL_DIR)):
            return root
    for folder in (target, *target.parents):
        if (folder / IMAGE_DIR).is_dir() or (folder / LABEL_DIR).is_dir():
            return folder
        if (folder / IMAGES_DIR).is_dir() and ((folder / MASKS_DIR).is_dir() or (folder / CLASSES_FILE).is_file()):
            return folder
    return None


def refuse_dataset(path: str | os.PathLike, data_root: str | os.PathLike | None = None, option: str = "output") -> None:
    """Raise OutputError when ``path`` is inside a dataset folder (see ``dataset_holding``)."""
    root = dataset_holding(path, data_root)
    if root is not None:
        raise OutputError(f"{path}: inside the dataset folder {root}; nothing is ever written into a dataset: "
                          f"choose another {option} outside it")


def is_input(path: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> bool:
    """Return whether ``path`` (resolved) is one of ``inputs`` (files or folders) or inside one of them."""
    target = Path(path).resolve()
    return any(target.is_relative_to(Path(i).resolve()) for i in inputs)


def output_file(path: str | os.PathLike, *, data_root: str | os.PathLike | None = None,
                inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False, option: str = "output",
                create: bool = True) -> Path:
    """Return ``path`` after checking that a file may be written there (its folder is created, unless ``create``
    is False: then its nearest existing folder must be writable).

    Refused: inside a dataset; a folder; an existing file unless ``overwrite``; an existing file that is, or is
    under, one of ``inputs`` (files or folders this command reads) even with ``overwrite``.
    """
    path = Path(path)
    refuse_dataset(path, data_root, option)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; {option} takes a file name")
    if path.exists():
        if is_input(path, inputs):
            raise OutputError(f"{path}: an input of this command; choose another {option}")
        existing_outputs([path], overwrite)
    _folder_for_writing(path.parent, option, create)
    return path


def output_folder(path: str | os.PathLike, *, data_root: str | os.PathLike | None = None,
                  option: str = "output folder", create: bool = True) -> Path:
    """Return ``path`` after checking that files may be written into it: not inside a dataset, not a file,
    writable. It is created, unless ``create`` is False (then its nearest existing folder must be writable)."""
    path = Path(path)
    refuse_dataset(path, data_root, option)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file; {option} takes a folder")
    _folder_for_writing(path, option, create)
    return path


def _folder_for_writing(folder: Path, option: str, create: bool) -> None:
    """Create ``folder`` (``create``) and check it is writable; or check that its nearest existing folder is."""
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise OutputError(f"{folder}: a file is in the way; expected a folder there") from None
        except OSError as err:
            raise OutputError(f"{folder}: cannot create this folder ({err.strerror.lower()})") from None
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(f"{existing}: a file is in the way of {folder}; expected a folder there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{existing}: not writable (permission denied); choose another {option}")


def existing_outputs(paths: Iterable[Path], overwrite: bool) -> None:
    """Raise OutputError naming the first of ``paths`` that exists (and how many do), unless ``overwrite``."""
    if overwrite:
        return
    found = [p for p in paths if p.exists()]
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise OutputError(f"{found[0]} exists{more}; pass --overwrite (overwrite=True) to replace it, or choose "
                          f"another output")


def bar_disabled(progress: bool | None, main: bool = True) -> bool | None:
    """Return tqdm's ``disable`` for a ``progress`` setting: True shows a bar, False none, None a bar on a terminal
    only (tqdm's own test), so a log redirected to a file holds lines, not cursor codes. Only the main process of
    a distributed run shows one."""
    if not main or progress is False:
        return True
    return None if progress is None else False
