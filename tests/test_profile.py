import pytest

from seg_utils.config import get_profile
from seg_utils.data import dataset_root
from seg_utils.notebook import setup


def test_profiles_and_environment(monkeypatch):
    monkeypatch.setenv("SEG_PROFILE", "demo")
    assert get_profile().name == "demo"
    assert get_profile("full").crop_size == (512, 1024)
    monkeypatch.setenv("SEG_PROFILE", "huge")
    with pytest.raises(ValueError, match="SEG_PROFILE must be one of smoke, demo, full"):
        get_profile()
    monkeypatch.delenv("SEG_PROFILE")
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    assert get_profile().name == "demo"  # no real data: never the full recipe


def test_setup_writes_the_synthetic_set_once(monkeypatch, tmp_path):
    monkeypatch.setenv("SEG_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    first = setup("smoke")
    assert first.synthetic and first.data_root.is_relative_to(tmp_path)
    assert (first.data_root / "leftImg8bit" / "train").is_dir()
    stamp = first.data_root.stat().st_mtime_ns
    second = setup("smoke")
    assert second.data_root == first.data_root and second.data_root.stat().st_mtime_ns == stamp
    assert "profile: smoke" in first.describe() and str(tmp_path) not in first.describe()


def test_setup_uses_the_real_dataset_when_named(monkeypatch, synthetic_root):
    monkeypatch.setenv("CITYSCAPES_DATASET", str(synthetic_root))
    cfg = setup("smoke")
    assert cfg.data_root == synthetic_root and not cfg.synthetic


def test_the_full_profile_needs_the_real_dataset(monkeypatch, tmp_path):
    monkeypatch.setenv("SEG_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    with pytest.raises(ValueError, match="set CITYSCAPES_DATASET"):
        setup("full")
    assert not (tmp_path / "data").exists()  # not 5000 full-size synthetic frames


@pytest.mark.parametrize("content", ["nothing", "images only"])
def test_setup_says_what_a_cityscapes_folder_lacks(monkeypatch, tmp_path, content):
    from seg_utils.data import DatasetError

    if content == "images only":
        for split in ("train", "val"):
            (tmp_path / "leftImg8bit" / split).mkdir(parents=True)
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path))
    missing = "gtFine/" if content == "images only" else "leftImg8bit/ and no gtFine/"
    with pytest.raises(DatasetError, match=f"{tmp_path}: CITYSCAPES_DATASET folder has no {missing}"):
        setup("smoke")
    with pytest.raises(DatasetError, match="CITYSCAPES_DATASET folder"):
        dataset_root()
