import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.preparation.json2labelImg import json2labelImg

from seg_utils import CityscapesDataset, DatasetError, check_dataset, find_samples
from seg_utils.cityscapes import require_labels
from seg_utils.cli import main as cli_main
from seg_utils.images import read_label
from seg_utils.layouts import open_layout


def test_finds_frames_by_official_names(synthetic_root):
    samples = find_samples(synthetic_root, "val")
    assert len(samples) == 3
    for s in samples:
        assert s.image_path.name == f"{s.stem}_leftImg8bit.png"
        assert s.label_path.name == f"{s.stem}_gtFine_labelIds.png"
        assert s.image_path.parent.name == s.city == s.stem.split("_")[0]
        assert s.instance_path is not None and s.polygons_path is not None
        assert s.train_ids_path is None  # not shipped with the dataset
    assert [s.stem for s in samples] == sorted(s.stem for s in samples)


def test_items_are_the_frames_pixels_and_trainids_as_uint8(synthetic_root):
    ds = CityscapesDataset(synthetic_root, "train")
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 128)  # normalised on the device (to_device)
    assert torch.equal(image, torch.from_numpy(ds.load_image(0)).permute(2, 0, 1))
    assert target.dtype == torch.uint8 and target.shape == (64, 128)
    values = set(target.unique().tolist())
    assert values <= set(range(19)) | {255}
    assert 255 in values  # the ego-vehicle strip is void


def test_targets_equal_official_train_id_images(synthetic_root, tmp_path):
    """Our on-the-fly mapping equals what csCreateTrainIdLabelImgs writes (json2labelImg, "trainIds")."""
    ds = CityscapesDataset(synthetic_root, "val")
    for i, sample in enumerate(ds.samples):
        official = tmp_path / f"{sample.stem}_gtFine_labelTrainIds.png"
        json2labelImg(str(sample.polygons_path), str(official), "trainIds")
        expected = cv2.imread(str(official), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(ds[i][1].numpy(), expected)


def test_prefers_shipped_train_id_files(dataset_copy):
    sample = find_samples(dataset_copy, "val")[0]
    label_ids = read_label(sample.label_path)
    marker = np.full_like(label_ids, 7)
    cv2.imwrite(str(sample.label_path).replace("_labelIds.png", "_labelTrainIds.png"), marker)
    ds = CityscapesDataset(dataset_copy, "val")
    assert (ds[0][1] == 7).all()
    ds_ids = CityscapesDataset(dataset_copy, "val", label_mode="labelId")
    np.testing.assert_array_equal(ds_ids[0][1].numpy(), label_ids)


def test_label_id_mode_keeps_the_34_ids(synthetic_root):
    ds = CityscapesDataset(synthetic_root, "train", label_mode="labelId")
    target = ds[0][1]
    assert target.max() <= 33 and 1 in target.unique()  # ego vehicle is class 1, not ignored


def test_test_split_has_only_dummy_labels(synthetic_root):
    ds = CityscapesDataset(synthetic_root, "test")
    assert not ds.has_labels
    image, target = ds[0]
    assert image.shape[0] == 3 and (target == 255).all()
    with pytest.raises(DatasetError, match="official server"):
        require_labels("test")


def test_check_counts_a_good_folder(synthetic_root, capsys):
    report = check_dataset(synthetic_root)
    assert report.ok, report.problems
    assert sum(report.counts["train"].values()) == 4 and sum(report.counts["val"].values()) == 3
    assert cli_main(["check", str(synthetic_root)]) == 0
    out = capsys.readouterr().out
    assert "train: 4 frames" in out and "OK" in out


def _break(root, case):
    val = find_samples(root, "val")
    s = val[0]
    if case == "missing folder":
        return root / "nowhere", "dataset folder not found"
    if case == "missing split":
        import shutil

        shutil.rmtree(root / "leftImg8bit" / "val")
        return root, "no such folder"
    if case == "image without label":
        s.label_path.unlink()
        return root, f"{s.image_path}: an image without a label (expected gtFine/val/{s.city}/{s.stem}" \
            "_gtFine_labelIds.png)"
    if case == "label without image":
        s.image_path.unlink()
        return root, f"{s.label_path}: a label without an image (expected leftImg8bit/val/{s.city}/{s.stem}" \
            "_leftImg8bit.png)"
    if case == "corrupt png":
        data = s.image_path.read_bytes()
        s.image_path.write_bytes(data[: len(data) // 3])
        return root, f"{s.stem}_leftImg8bit.png: truncated or corrupt image (it does not decode completely)"
    if case == "ids outside table":
        label = read_label(s.label_path)
        label[0, 0] = 40
        cv2.imwrite(str(s.label_path), label)
        return root, "label ids [40] outside the official table"
    if case == "size mismatch":
        label = read_label(s.label_path)
        cv2.imwrite(str(s.label_path), label[:32])
        return root, "label is 128x32, its image is 128x64"
    if case == "colour label":
        color = cv2.imread(str(s.label_path).replace("labelIds", "color"))
        cv2.imwrite(str(s.label_path), color)
        return root, "3 channels (PIL mode RGB); expected a single-channel label image"
    raise AssertionError(case)


CASES = ["missing folder", "missing split", "image without label", "label without image", "corrupt png",
         "ids outside table", "size mismatch", "colour label"]


@pytest.mark.parametrize("case", CASES)
def test_check_reports_each_problem_in_one_line(dataset_copy, case, capsys):
    root, message = _break(dataset_copy, case)
    assert cli_main(["check", str(root)]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert all(line.startswith("error: ") or "problem(s) found in" in line for line in err.strip().splitlines())


@pytest.mark.parametrize("case", CASES)
def test_dataset_raises_the_same_clear_error(dataset_copy, case):
    root, message = _break(dataset_copy, case)
    with pytest.raises(DatasetError) as info:
        ds = CityscapesDataset(root, "val")
        for i in range(len(ds)):
            ds[i]
    if case == "ids outside table":
        message = "label ids [40] outside the official table"
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cli_error_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "seg_utils", "check", str(tmp_path / "absent")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_nothing_is_written_into_the_dataset(synthetic_root):
    before = sorted(p.relative_to(synthetic_root) for p in synthetic_root.rglob("*"))
    ds = CityscapesDataset(synthetic_root, "val")
    ds[0]
    check_dataset(synthetic_root)
    assert sorted(p.relative_to(synthetic_root) for p in synthetic_root.rglob("*")) == before


def test_palette_label_files_are_read_as_their_indices_everywhere(dataset_copy, capsys):
    # A labelIds PNG saved in palette mode (an editor's "indexed colour") holds ids as indices: the official
    # evaluator reads the indices, and so do check, the dataset and training.
    from PIL import Image

    from seg_utils.labels import palette

    sample = find_samples(dataset_copy, "val")[0]
    label_ids = read_label(sample.label_path)
    image = Image.frombytes("P", label_ids.shape[::-1], label_ids.tobytes())
    image.putpalette(palette("labelId").tobytes())
    image.save(sample.label_path)
    assert cv2.imread(str(sample.label_path), cv2.IMREAD_UNCHANGED).ndim == 3  # OpenCV alone sees colours
    np.testing.assert_array_equal(read_label(sample.label_path), label_ids)
    assert cli_main(["check", str(dataset_copy)]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(CityscapesDataset(dataset_copy, "val", label_mode="labelId").load_target(0),
                                  label_ids)


def test_train_id_files_are_checked_and_named(dataset_copy):
    sample = find_samples(dataset_copy, "train")[0]
    path = sample.label_path.with_name(sample.label_path.name.replace("_labelIds", "_labelTrainIds"))
    train_ids = np.full_like(read_label(sample.label_path), 255)
    train_ids[:4] = 19
    cv2.imwrite(str(path), train_ids)
    with pytest.raises(DatasetError, match=rf"{path.name}: trainIds \[19\] outside 0..18 and 255"):
        CityscapesDataset(dataset_copy, "train").load_target(0)
    report = check_dataset(dataset_copy)
    assert len(report.problems) == 1 and path.name in report.problems[0]
    cv2.imwrite(str(path), np.zeros_like(train_ids)[:32])  # in range now, but half the image's height
    assert "label is 128x32, its image is 128x64" in check_dataset(dataset_copy).problems[0]


def test_check_says_1_frame(dataset_copy, capsys):
    for sample in find_samples(dataset_copy, "val")[1:]:
        sample.image_path.unlink()
        sample.label_path.unlink()
    assert cli_main(["check", str(dataset_copy), "--quick"]) == 0
    assert "val: 1 frame in 1 city" in capsys.readouterr().out


def test_libspng_and_opencv_read_the_same_pixels(synthetic_root, tmp_path, monkeypatch):
    """The fast PNG decoder of frames (pyspng) and OpenCV's give the very same arrays, RGB and RGBA."""
    from seg_utils import images as data

    assert data.pyspng is not None  # a dependency: the tests run the fast path
    sample = find_samples(synthetic_root, "train")[0]
    rgba = tmp_path / "rgba.png"
    image = cv2.imread(str(sample.image_path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(rgba), np.dstack([image, np.full(image.shape[:2], 128, np.uint8)]))
    fast = [data.read_image(sample.image_path), data.read_image(rgba)]
    monkeypatch.setattr(data, "pyspng", None)
    slow = [data.read_image(sample.image_path), data.read_image(rgba)]
    for a, b in zip(fast, slow):
        assert a.dtype == b.dtype == np.uint8 and a.flags.c_contiguous
        np.testing.assert_array_equal(a, b)


def test_a_split_of_symlinked_city_folders_is_there(dataset_copy, tmp_path):
    """Cities linked in from elsewhere (a common set-up) are read by the scanner, so the split is there: train then
    stops on its problems instead of training without validation."""
    for top in ("leftImg8bit", "gtFine"):
        for city in list((dataset_copy / top / "val").iterdir()):
            elsewhere = tmp_path / "elsewhere" / top / city.name
            elsewhere.parent.mkdir(parents=True, exist_ok=True)
            city.rename(elsewhere)
            city.symlink_to(elsewhere, target_is_directory=True)
    assert open_layout(dataset_copy).has_split("val") and find_samples(dataset_copy, "val")
    import shutil

    for top in ("leftImg8bit", "gtFine"):
        shutil.rmtree(dataset_copy / top / "test")
        (dataset_copy / top / "test").mkdir()
    assert not open_layout(dataset_copy).has_split("test")
