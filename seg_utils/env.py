"""The one reader of the environment: the real dataset (``CITYSCAPES_DATASET``, the variable the official
cityscapesscripts read), the run profile's name (``SEG_PROFILE``) and the workspace (``SEG_WORKSPACE``).

It imports nothing of the package: every module may ask it, and it depends on none of them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cityscapes_root", "profile_name", "workspace"]


def cityscapes_root() -> Path | None:
    """Return the real dataset folder named by ``CITYSCAPES_DATASET``, or None when it is unset."""
    value = os.environ.get("CITYSCAPES_DATASET", "").strip()
    return Path(value).expanduser() if value else None


def profile_name() -> str | None:
    """Return the profile named by ``SEG_PROFILE`` (lower case), or None when it is unset."""
    return os.environ.get("SEG_PROFILE", "").strip().lower() or None


def workspace() -> Path:
    """Return the folder for generated data and training runs (git-ignored).

    ``SEG_WORKSPACE`` if set; else the checkout's root when seg_utils is installed from a checkout
    (``pip install -e .``); else ``~/.cache/seg_utils``.
    """
    value = os.environ.get("SEG_WORKSPACE", "").strip()
    if value:
        return Path(value).expanduser()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "notebooks").is_dir():
        return checkout
    return Path.home() / ".cache" / "seg_utils"
