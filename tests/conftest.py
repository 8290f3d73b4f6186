"""Shared fixtures. Tests always run on the synthetic set, in the smoke profile."""

import shutil
from pathlib import Path

import pytest

SYNTH = dict(train=4, val=3, test=2, size=(64, 128), seed=0)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic Cityscapes-format set, written once per session. Treat it as read-only."""
    from seg_utils.synthetic import write_synthetic_cityscapes

    return write_synthetic_cityscapes(tmp_path_factory.mktemp("cityscapes") / "synthetic", **SYNTH)


@pytest.fixture
def dataset_copy(synthetic_root, tmp_path) -> Path:
    """A private copy of the synthetic set, for tests that break it on purpose."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "copy"))
