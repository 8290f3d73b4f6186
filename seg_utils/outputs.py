"""Where the package may write, and how: the one place that decides, asked by every command and helper before it
writes, and the atomic writer they all write through (``atomic_write``: the whole new file or the old one).

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

import errno
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from .env import cityscapes_root
from .layouts import layout_at

__all__ = ["OutputError", "atomic_write", "link_or_copy", "remove_stale_temporaries", "dataset_holding",
           "refuse_dataset", "is_input", "output_file", "output_folder", "existing_outputs", "bar_disabled"]


class OutputError(ValueError):
    """A path cannot be written: inside a dataset, an input, an existing file, a folder of the wrong kind, or
    not writable. The message names it."""


# Writing a file whole or not at all


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path, names: Iterable[str]) -> list[Path]:
    """Remove the temporary files of ``atomic_write`` for the files ``names`` in ``folder`` that processes no
    longer running left (a save killed half-way); return them. Another live process's are kept, and so is any
    other file."""
    removed, names = [], set(names)
    for path in Path(folder).glob(".*.tmp"):
        match = _TEMPORARY.match(path.name)
        if match and match["name"] in names and not _alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _os_error(err: BaseException | None) -> OSError | None:
    """Return the OSError behind ``err``: itself, or the one its chain holds (torch's writer reports a failed
    write as a RuntimeError such as "unexpected pos 228894720 vs 228894608", the OSError as its context)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _write_failure(path: Path, err: BaseException, size: int | None = None) -> OutputError:
    """Return the one line for a failed write of ``path`` (about ``size`` bytes): what happened, and what was kept."""
    kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
    cause = _os_error(err)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    full = (cause is not None and cause.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        free is not None and size is not None and free < size)
    if full:
        what = "quota exceeded" if cause is not None and cause.errno == errno.EDQUOT else "no space left on the device"
        room = f"{_size(free)} free in {path.parent}" if free is not None else f"in {path.parent}"
        need = f", and a {path.name} needs about {_size(size)}" if size else ""
        return OutputError(f"{path}: writing failed: {what} ({room}{need}); {kept}; free some space (or choose "
                           f"another folder) and resume")
    if cause is not None and cause.strerror:
        reason = cause.strerror
    else:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return OutputError(f"{path}: writing failed ({reason}); {kept}")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any], fsync: bool = True,
                 size: int | None = None) -> None:
    """Write ``path`` through a temporary file in the same folder: either the old file or the whole new one.

    ``fsync`` (checkpoints): the bytes reach the disk before the rename, so a power cut cannot leave an empty
    file either. A write that fails (a full disk, a file-size limit: torch reports those as RuntimeError) raises
    one OutputError line naming ``path``, and for a full disk the space left and ``size`` (what the file needs,
    about); the temporary file is removed, also when the write is interrupted (KeyboardInterrupt, a signal).
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)
        raise _write_failure(path, err, size) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold what ``src`` holds now (a hard link when possible: no second write), atomically."""
    tmp = _temporary(dst)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)  # last.pt is later replaced by a new inode, so best.pt keeps this content
        _fsync_dir(dst.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        with open(src, "rb") as source:
            atomic_write(dst, lambda f: shutil.copyfileobj(source, f))


# Where writing is refused


def _known_roots(data_root: str | os.PathLike | None) -> list[Path]:
    return [Path(r) for r in (data_root, cityscapes_root()) if r is not None]


def dataset_holding(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> Path | None:
    """Return the dataset folder that ``path`` is in (or is), or None.

    A dataset folder is ``data_root``, the ``CITYSCAPES_DATASET`` folder, or any folder a layout holds
    (``layouts.layout_at``: ``leftImg8bit/`` or ``gtFine/``; ``images/`` with ``masks/`` or ``classes.json``);
    paths are compared resolved, so a symlink or a relative path into one is found too.
    """
    target = Path(path).resolve()
    for root in _known_roots(data_root):
        # the root, and its top folders where they are symlinks to folders elsewhere
        kind = layout_at(root)
        tops = [root / part.top for part in kind.parts] if kind is not None else []
        if any(target.is_relative_to(p.resolve()) for p in (root, *tops)):
            return root
    for folder in (target, *target.parents):
        if layout_at(folder) is not None:
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
