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
        assert image.shape == (3, 48, 96) and target.shape == (48, 96) and target.dtype == torch.uint8
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
    image_out, target_out = EvalTransform()(image, target)
    assert image_out.dtype == target_out.dtype == torch.uint8  # device.to_device normalises and widens
    assert torch.equal(target_out, torch.from_numpy(target))


def _mmseg_photometric(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmsegmentation's PhotoMetricDistortion (brightness_delta 32, contrast and saturation 0.5-1.5, hue_delta 18),
    written literally as its definition, on a BGR image as mmcv loads it, drawing from ``rng`` in its order."""

    def convert(img, alpha=1, beta=0):
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def contrast(img):
        return convert(img, alpha=rng.uniform(0.5, 1.5)) if rng.integers(2) else img

    img = convert(bgr, beta=rng.uniform(-32, 32)) if rng.integers(2) else bgr
    mode = rng.integers(2)
    if mode == 1:
        img = contrast(img)
    if rng.integers(2):  # saturation
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=rng.uniform(0.5, 1.5))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if rng.integers(2):  # hue
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + rng.integers(-18, 18)) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0:
        img = contrast(img)
    return img


def test_photometric_jitter_is_mmsegmentations_definition(synthetic_root):
    """Byte for byte the definition above, on a real (synthetic) photo: every step, its order and its clipping."""
    image, _ = CityscapesDataset(synthetic_root, "train").load(0)
    for seed in range(40):
        ours = TrainTransform(rng=np.random.default_rng(seed)).photometric(image)
        reference = _mmseg_photometric(np.ascontiguousarray(image[..., ::-1]), np.random.default_rng(seed))
        np.testing.assert_array_equal(ours, reference[..., ::-1], err_msg=f"seed {seed}")


class _Draws:
    """A stand-in generator that returns scripted draws: which steps apply, and their amounts."""

    def __init__(self, *values):
        self.values = list(values)

    def integers(self, *args):
        return self.values.pop(0)

    def uniform(self, *args):
        return self.values.pop(0)


def test_photometric_hue_and_saturation_act_in_hsv():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 200
    # hue only: +10 in OpenCV's units (20 degrees) turns pure red towards orange, brightness kept
    t = TrainTransform()
    t._rng = _Draws(0, 0, 0, 1, 10, 0)
    out = t.photometric(red)
    assert out[0, 0, 0] == 200 and 0 < out[0, 0, 1] < 200 and out[0, 0, 2] == 0
    h = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[0, 0, 0]
    assert h == 10
    # saturation only, 0.5: S halves in HSV (V, the largest channel, is kept; no blend towards luma grey)
    t._rng = _Draws(0, 0, 1, 0.5, 0, 0)
    hsv = cv2.cvtColor(t.photometric(red), cv2.COLOR_RGB2HSV)[0, 0]
    assert hsv[1] == 127 and hsv[2] == 200
    # a grey image has no hue or saturation to change: only brightness and contrast move it
    grey = np.full((4, 4, 3), 90, np.uint8)
    for draws in [(0, 0, 1, 1.5, 1, 17, 0), (0, 1, 0, 1, 0.5, 1, -18)]:
        t._rng = _Draws(*draws)
        assert (t.photometric(grey) == 90).all()


def test_photometric_contrast_comes_first_or_last():
    # the same draws (brightness -, contrast 1.5, saturation 0.5) in both orders give different images
    pixel = np.array([[[200, 120, 60]]], np.uint8)
    first, last = TrainTransform(), TrainTransform()
    first._rng = _Draws(0, 1, 1, 1.5, 1, 0.5, 0)  # mode 1: contrast, then saturation
    last._rng = _Draws(0, 0, 1, 0.5, 0, 1, 1.5)  # mode 0: saturation, then contrast
    a, b = first.photometric(pixel), last.photometric(pixel)
    assert not np.array_equal(a, b)
    # and each is what the steps in its order give, with clipping at 255 between them
    hsv = cv2.cvtColor(np.clip(pixel * np.float32(1.5), 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
    hsv[..., 1] = (hsv[..., 1] * np.float32(0.5)).astype(np.uint8)
    np.testing.assert_array_equal(a, cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))
