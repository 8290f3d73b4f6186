import math

import pytest

from seg_utils import config as config_module
from seg_utils.cityscapes import dataset_root
from seg_utils.config import TrainConfig, get_profile, profile_reason
from seg_utils.engine import train
from seg_utils.notebook import setup


def test_profiles_and_environment(monkeypatch):
    monkeypatch.setattr(config_module, "_cuda_available", lambda: False)
    monkeypatch.setenv("SEG_PROFILE", "demo")
    assert get_profile().name == "demo"
    assert get_profile("full").crop_size == (512, 1024)
    monkeypatch.setenv("SEG_PROFILE", "huge")
    with pytest.raises(ValueError, match="SEG_PROFILE must be one of smoke, demo, demo-gpu, full"):
        get_profile()
    monkeypatch.delenv("SEG_PROFILE")
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    assert get_profile().name == "demo"  # no real data: never the full recipe
    assert profile_reason() == "no CUDA GPU: the CPU demo"


@pytest.mark.parametrize(("cuda", "real_data", "expected"), [
    (False, False, "demo"), (False, True, "demo"), (True, False, "demo-gpu"), (True, True, "full")])
def test_the_default_profile_follows_the_machine(monkeypatch, synthetic_root, cuda, real_data, expected):
    monkeypatch.setattr(config_module, "_cuda_available", lambda: cuda)
    monkeypatch.delenv("SEG_PROFILE", raising=False)
    if real_data:
        monkeypatch.setenv("CITYSCAPES_DATASET", str(synthetic_root))
    else:
        monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    assert get_profile().name == expected
    assert ("GPU" in profile_reason()) and (("no CUDA" in profile_reason()) == (not cuda))
    monkeypatch.setenv("SEG_PROFILE", "smoke")
    assert get_profile().name == "smoke" and profile_reason() == "set by SEG_PROFILE"


def test_the_gpu_demo_shares_the_demo_scenes_and_trains_whole_frames():
    demo, gpu = get_profile("demo"), get_profile("demo-gpu")
    assert gpu.data == demo.data and gpu.synth_size == demo.synth_size  # one synthetic set for both
    assert gpu.crop_size == gpu.synth_size and gpu.output_stride == 8 and gpu.batch_size == 8
    assert (gpu.optimizer, gpu.class_weights, gpu.warmup_iters) == (demo.optimizer, demo.class_weights, 10)


def test_the_gpu_demo_runs_at_smoke_size(synthetic_root, tmp_path):
    """The GPU demo's recipe (whole frames, OS 8, batch 8, AdamW, class weights) on the smoke set, on this CPU."""
    frame = get_profile("smoke").synth_size
    cfg = TrainConfig.from_profile("demo-gpu", data_root=synthetic_root, out_dir=tmp_path / "run", crop_size=frame,
                                   iters=2, val_every=2, num_workers=0)
    assert cfg.batch_size == 8 and cfg.output_stride == 8 and cfg.warmup_iters == 0  # a tenth of 2 iterations
    history = train(cfg, progress=False)
    assert len(history["loss"]) == 2 and all(math.isfinite(x) for x in history["loss"])
    assert history["val_iter"] == [2] and 0 <= history["val_miou"][0] <= 1


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
    from seg_utils.images import DatasetError

    if content == "images only":
        for split in ("train", "val"):
            (tmp_path / "leftImg8bit" / split).mkdir(parents=True)
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path))
    missing = "gtFine/" if content == "images only" else "leftImg8bit/ and no gtFine/"
    with pytest.raises(DatasetError, match=f"{tmp_path}: CITYSCAPES_DATASET folder has no {missing}"):
        setup("smoke")
    with pytest.raises(DatasetError, match="CITYSCAPES_DATASET folder"):
        dataset_root()
