"""The shape of the data and model layer: one Layout per kind of dataset folder, one Sample shape, one record of what a
model is (``model_info``), video files as context managers, and worker errors as values."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from test_own_data import THREE, make_folder

from seg_utils.cityscapes import CityscapesLayout
from seg_utils.classes import ClassTable
from seg_utils.folder import FolderLayout
from seg_utils.images import IMAGE_SUFFIXES, DatasetError
from seg_utils.inference import load_model
from seg_utils.layouts import SPLITS, Layout, Sample, layout_at, open_layout
from seg_utils.loaders import ErrorsAsValues, collate, raise_error
from seg_utils.model import build_model
from seg_utils.model_info import ModelInfo
from seg_utils.outputs import dataset_holding
from seg_utils.video import VideoReader, VideoWriter


def test_the_package_knows_two_layouts_and_asks_each_whether_a_folder_is_its(synthetic_root, tmp_path):
    assert Layout.__subclasses__() == [CityscapesLayout, FolderLayout]
    folder = make_folder(tmp_path / "own")
    assert layout_at(synthetic_root) is CityscapesLayout and layout_at(folder) is FolderLayout
    assert layout_at(tmp_path) is None and dataset_holding(folder / "images" / "train") == folder
    (tmp_path / "photos" / "images").mkdir(parents=True)  # images/ alone: photos, not a dataset (nothing to pair)
    assert layout_at(tmp_path / "photos") is None and dataset_holding(tmp_path / "photos" / "images") is None


def test_both_layouts_give_samples_of_one_shape(synthetic_root, tmp_path):
    folder = make_folder(tmp_path / "own")
    for layout in (open_layout(synthetic_root), open_layout(folder)):
        samples = layout.samples("val")
        assert samples and all(type(s) is Sample and s.split == "val" for s in samples)
        assert all(s.image_path.is_file() and s.label_path.is_file() and s.stem == s.image_path.stem.split("_left")[0]
                   for s in samples)
        dataset = layout.dataset("val")
        image, target = dataset.load(0)
        assert image.dtype == target.dtype == np.uint8 and image.shape[:2] == target.shape
        assert set(np.unique(target)) <= set(range(len(layout.table))) | {255}
    assert {s.city for s in open_layout(folder).samples("val")} == {""}
    assert open_layout(folder).table == ClassTable.from_dict(THREE) and SPLITS == ("train", "val", "test")


def test_a_plain_folder_takes_every_photo_kind_predict_takes(tmp_path):
    folder = make_folder(tmp_path / "own", photos="png", train=2, val=1)
    photo = folder / "images" / "train" / "img_000.png"
    for suffix in (".bmp", ".webp", ".TIF"):
        assert suffix.lower() in IMAGE_SUFFIXES
        converted = photo.with_suffix(suffix)
        cv2.imwrite(str(converted), cv2.imread(str(photo)))
        photo.unlink()
        sample = open_layout(folder).samples("train")[0]
        assert sample.image_path == converted and open_layout(folder).read(sample)[0].shape[:2] == (61, 83)
        photo = converted


def test_the_model_record_goes_into_the_checkpoint_and_comes_back(tmp_path):
    table = ClassTable.from_dict(THREE)
    info = ModelInfo(table, (61, 83), (0.5, 1.0), 16)
    model = build_model(3, weights=None, output_stride=16)
    torch.save({"format": "seg_utils.engine/2", "model": model.state_dict(), "info": info.to_dict()}, tmp_path / "a.pt")
    assert load_model(tmp_path / "a.pt").info == info
    # a checkpoint of format 1 held the same facts in three places: it is read the same
    old = {"format": "seg_utils.engine/1", "model": model.state_dict(), "classes": table.to_dict(),
           "frame_size": [61, 83], "config": {"scale_range": [0.5, 1.0], "output_stride": 16}}
    torch.save(old, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").info == info
    # a bare state dict: the class count's table, nothing about frames
    torch.save(build_model(19, weights=None, aux_loss=False).state_dict(), tmp_path / "bare.pt")
    assert load_model(tmp_path / "bare.pt").info == ModelInfo(ClassTable.cityscapes())


def test_every_built_model_says_what_it_is():
    assert build_model(19, weights=None).info.classes == ClassTable.cityscapes()
    assert build_model(34, weights=None, output_stride=16).info == ModelInfo(ClassTable.cityscapes("labelId"), None,
                                                                               None, 16)
    numbered = build_model(5, weights=None).info.classes
    assert numbered.names == tuple(f"class {i}" for i in range(5)) and len(set(numbered.colors)) == 5


def test_a_video_writer_leaves_the_old_file_or_the_whole_new_one(tmp_path):
    frame = np.full((32, 48, 3), 90, np.uint8)
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, 10.0, (32, 48)) as sink:
        for _ in range(3):
            sink.write(frame)
    with VideoReader(path) as video:
        assert (video.info.frames, video.info.size, video.info.fps) == (3, (32, 48), 10.0)
        assert len(list(video)) == 3
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="stopped"), VideoWriter(path, 10.0, (32, 48)) as sink:
        sink.write(frame)
        raise RuntimeError("stopped half-way")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_a_frame_that_cannot_be_read_comes_out_of_the_loader_as_its_error(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a PNG")

    class Frames(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            from seg_utils.images import read_image

            return torch.zeros(3) if i == 0 else torch.as_tensor(read_image(broken))

    loader = torch.utils.data.DataLoader(ErrorsAsValues(Frames()), batch_size=1, num_workers=1, collate_fn=collate)
    batches = list(loader)
    assert raise_error(batches[0]).shape == (1, 3)
    with pytest.raises(DatasetError) as err:
        raise_error(batches[1])
    assert str(err.value) == f"{broken}: unreadable or corrupt image (expected an 8-bit RGB image: PNG or JPEG)"


def test_a_model_built_from_a_checkpoint_keeps_its_record_and_writes_its_own_format(tmp_path):
    from seg_utils.predictions import default_format

    table = ClassTable.from_dict(THREE)
    info = ModelInfo(table, (61, 83), (0.5, 1.0), 16)
    torch.save({"format": "seg_utils.engine/2", "model": build_model(3, weights=None).state_dict(),
                "info": info.to_dict()}, tmp_path / "own.pt")
    model = build_model(3, weights=tmp_path / "own.pt", output_stride=8)
    assert model.info.classes == table and model.info.frame_size == (61, 83) and model.info.output_stride == 8
    assert default_format(model) == "index" and default_format(build_model(19, weights=None)) == "labelIds"
