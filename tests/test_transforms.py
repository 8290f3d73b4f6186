import cv2
import numpy as np
import pytest
import torch

from seg_utils import CityscapesDataset, EvalTransform, TrainTransform
from seg_utils.transforms import denormalize, normalize


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    target = rng.integers(0, 19, (64, 128), dtype=np.uint8)
    target[:4] = 255
    return image, target


def test_normalize_round_trip(frame):
    image, _ = frame
    tensor = normalize(image)
    assert tensor.shape == (3, 64, 128) and tensor.dtype == torch.float32
    np.testing.assert_array_equal(denormalize(tensor), image)


@pytest.mark.parametrize("scale", [1.0, 2.0, 3.0])  # integer scales: nearest has no ties
@pytest.mark.parametrize("flip", [False, True])
def test_geometry_equals_resize_then_crop(frame, scale, flip):
    """One warpAffine gives what resizing the frame (nearest for labels), flipping and cropping gives."""
    image, target = frame
    t = TrainTransform(crop_size=(40, 60), jitter=False)
    y0, x0 = 7, 11
    out_image, out_target = t.geometry(image.copy(), target.copy(), scale, y0, x0, flip)
    size = (round(128 * scale), round(64 * scale))
    ref_target = cv2.resize(target, size, interpolation=cv2.INTER_NEAREST_EXACT)
    ref_image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR).astype(int)
    if flip:
        ref_target, ref_image = ref_target[:, ::-1], ref_image[:, ::-1]
    np.testing.assert_array_equal(out_target, ref_target[y0:y0 + 40, x0:x0 + 60])
    assert np.abs(out_image.astype(int) - ref_image[y0:y0 + 40, x0:x0 + 60]).max() <= 1  # fixed-point rounding


def test_crop_larger_than_frame_pads_labels_with_ignore(frame):
    image, target = frame
    t = TrainTransform(crop_size=(80, 160), jitter=False)
    out_image, out_target = t.geometry(image, target, 0.5, 0, 0, False)
    assert out_target.shape == (80, 160)
    assert (out_target[32:] == 255).all() and (out_target[:, 64:] == 255).all()
    assert not (out_target[4:32, :64] == 255).any()  # the frame itself keeps its classes
    # the image is padded with the mean colour, which normalises to ~0
    assert normalize(out_image)[:, 40:, :].abs().max() < 0.02


def test_training_items_keep_integer_ids(synthetic_root):
    ds = CityscapesDataset(synthetic_root, "train", transforms=TrainTransform(crop_size=(48, 96)))
    torch.manual_seed(0)
    for i in range(len(ds)):
        raw = set(np.unique(ds.load_target(i)).tolist())
        image, target = ds[i]
        assert image.shape == (3, 48, 96) and target.shape == (48, 96) and target.dtype == torch.int64
        assert set(target.unique().tolist()) <= raw | {255}  # nearest only: no blended ids


def test_random_draws_differ_and_are_seeded(frame):
    image, target = frame
    a = TrainTransform((32, 64), rng=np.random.default_rng(1))
    b = TrainTransform((32, 64), rng=np.random.default_rng(1))
    first = [a(image, target)[1] for _ in range(3)]
    second = [b(image, target)[1] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert not all(torch.equal(first[0], x) for x in first[1:])


def test_eval_transform_resizes_labels_with_nearest(frame):
    image, target = frame
    out_image, out_target = EvalTransform(size=(32, 64))(image, target)
    assert out_image.shape == (3, 32, 64)
    assert set(out_target.unique().tolist()) <= set(np.unique(target).tolist())
    assert torch.equal(EvalTransform()(image, target)[1], torch.from_numpy(target).long())


def test_photometric_jitter_is_one_clipped_colour_transform(frame):
    image, _ = frame
    t = TrainTransform((32, 64), rng=np.random.default_rng(3))
    outs = [t.photometric(image) for _ in range(8)]
    assert all(o.dtype == np.uint8 and o.shape == image.shape for o in outs)
    assert any(not np.array_equal(o, image) for o in outs)
    # a grey image stays grey under any brightness / contrast / saturation change
    grey = np.repeat(image[..., :1], 3, axis=2)
    for _ in range(5):
        out = t.photometric(grey).astype(int)
        assert np.abs(out[..., 0] - out[..., 1]).max() <= 1 and np.abs(out[..., 1] - out[..., 2]).max() <= 1
