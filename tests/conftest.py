"""Shared fixtures. Tests always run on the synthetic set, in the smoke profile."""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SYNTH = dict(train=4, val=3, test=2, size=(64, 128), seed=0)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic Cityscapes-format set, written once per session. Treat it as read-only."""
    from seg_utils.synthetic import write_synthetic_cityscapes

    return write_synthetic_cityscapes(tmp_path_factory.mktemp("cityscapes") / "synthetic", **SYNTH)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request) -> Iterator[Callable[[str], Path]]:
    """`module_tmp(name)` makes a folder for a module's shared fixtures; they go when the module's tests are done,
    unless one failed. A full run writes about 10 GB of checkpoints (ResNet-50: 160-500 MB each), more than a small
    CI disk holds at once; pyproject.toml's tmp_path_retention_policy does the same for each test's tmp_path."""
    made, failed_before = [], request.session.testsfailed

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    if request.session.testsfailed == failed_before:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dataset_copy(synthetic_root, tmp_path) -> Path:
    """A private copy of the synthetic set, for tests that break it on purpose."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "copy"))
