import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from seg_utils.cli import main
from seg_utils.images import DatasetError, read_image
from seg_utils.inference import _forward, _windows, classes_of, load_model, predict, predict_logits
from seg_utils.labels import LABEL_ID_TO_TRAIN_ID, TRAIN_LABELS
from seg_utils.media import encode_prediction
from seg_utils.model import build_model
from seg_utils.outputs import OutputError
from seg_utils.predictions import predict_images, predict_split
from seg_utils.transforms import image_tensor, normalize


def _head_only(k):
    return build_model(num_classes=k, weights=None, aux_loss=False, output_stride=16)


@pytest.fixture(scope="module")
def checkpoint(module_tmp):
    torch.manual_seed(0)
    model = build_model(num_classes=19, weights=None, output_stride=16)
    path = module_tmp("ckpt") / "last.pt"
    torch.save({"model": model.state_dict(), "iteration": 0, "config": {"output_stride": 16}}, path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(checkpoint)


def test_windows_cover_the_frame():
    assert _windows(100, 128, 64) == [0]
    starts = _windows(300, 128, 85)
    assert starts[0] == 0 and starts[-1] == 300 - 128
    assert all(b - a <= 85 for a, b in zip(starts, starts[1:]))


def test_slide_equals_whole_when_one_window_covers_the_frame(model):
    images = torch.randn(1, 3, 64, 128)
    whole = predict_logits(model, images)
    slide = predict_logits(model, images, mode="slide", crop=(64, 128))
    torch.testing.assert_close(slide, whole)
    assert whole.shape == (1, 19, 64, 128)


def test_batched_windows_equal_one_window_at_a_time(model):
    images = torch.randn(2, 3, 80, 160)  # 2 x 4 windows of 48x64; overlaps in both directions
    crop, stride = (48, 64), (32, 42)
    assert len(_windows(80, 48, 32)) == 2 and len(_windows(160, 64, 42)) == 4
    with torch.no_grad():  # the averaging written out: each window's logits summed, divided by the count
        expected = torch.zeros(2, 19, 80, 160)
        counts = torch.zeros(1, 1, 80, 160)
        for y in _windows(80, 48, 32):
            for x in _windows(160, 64, 42):
                expected[:, :, y:y + 48, x:x + 64] += _forward(model, images[:, :, y:y + 48, x:x + 64])
                counts[:, :, y:y + 48, x:x + 64] += 1
    expected /= counts
    for window_batch in (1, 3, 4):  # 3: a last batch of 2
        out = predict_logits(model, images, mode="slide", crop=crop, stride=stride, window_batch=window_batch)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5, msg=f"window_batch={window_batch}")
    with pytest.raises(ValueError, match="window_batch"):
        predict_logits(model, images, mode="slide", window_batch=0)


def test_uint8_images_are_normalised_like_the_data_pipeline(model, synthetic_root):
    frame = next((synthetic_root / "leftImg8bit" / "val").rglob("*.png"))
    pixels = read_image(frame)
    expected = predict_logits(model, normalize(pixels)[None])
    torch.testing.assert_close(predict_logits(model, torch.from_numpy(pixels).permute(2, 0, 1)[None]), expected)


def test_slide_and_tta_keep_native_resolution(model):
    images = torch.randn(1, 3, 64, 128)
    slide = predict_logits(model, images, mode="slide", crop=(48, 64))
    assert slide.shape == (1, 19, 64, 128)
    probs = predict_logits(model, images, scales=(0.75, 1.0), flip=True)
    assert probs.shape == (1, 19, 64, 128)
    torch.testing.assert_close(probs.sum(1), torch.full((1, 64, 128), 4.0))  # 2 scales x 2 flips of softmax
    assert predict(model, images).shape == (1, 64, 128)


def test_encoding_formats():
    train_ids = np.array([[0, 13, 18, 255]], dtype=np.uint8)
    label_ids = encode_prediction(train_ids, "labelIds")
    np.testing.assert_array_equal(label_ids, [[7, 26, 33, 0]])
    np.testing.assert_array_equal(LABEL_ID_TO_TRAIN_ID[label_ids][0, :3], [0, 13, 18])
    assert encode_prediction(train_ids, "color").shape == (1, 4, 3)
    with pytest.raises(ValueError, match="format"):
        encode_prediction(train_ids, "rgb")


def test_one_prediction_per_test_image(model, synthetic_root, tmp_path):
    written = predict_split(model, synthetic_root, "test", tmp_path / "sub", progress=False)
    images = sorted((synthetic_root / "leftImg8bit" / "test").glob("*/*_leftImg8bit.png"))
    assert len(written) == len(images)
    for path, image_path in zip(sorted(written), images):
        assert path.name == image_path.name and path.parent.name == image_path.parent.name
        png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and png.shape == (64, 128)
        assert set(np.unique(png).tolist()) <= {lab.id for lab in TRAIN_LABELS}  # evaluated label ids only


def test_predict_then_evaluate_equals_the_official_evaluator(model, synthetic_root, tmp_path):
    from seg_utils.evaluation import evaluate_predictions
    from seg_utils.official import official_evaluate

    predict_split(model, synthetic_root, "val", tmp_path / "preds", progress=False)
    ours = evaluate_predictions(synthetic_root, "val", tmp_path / "preds")
    official = official_evaluate(synthetic_root, "val", tmp_path / "preds")
    assert ours["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-9)
    for name, iou in ours["class_iou"].items():
        ref = official["classScores"][name]
        assert (iou is None and np.isnan(ref)) or iou == pytest.approx(ref, abs=1e-9), name


def test_predict_command(checkpoint, synthetic_root, tmp_path):
    # Failures are in tests/test_bad_inputs.py; this is the way that works, with its output in a file (a pipe):
    # lines, no progress bar's cursor codes.
    out = tmp_path / "own"
    result = subprocess.run([sys.executable, "-m", "seg_utils", "predict", "--checkpoint", str(checkpoint),
                             "--images", str(synthetic_root / "leftImg8bit" / "val"), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(list(out.rglob("*.png"))) == 3  # the folder's layout (one sub-folder per city) is kept
    assert result.stdout == f"wrote 3 labelIds predictions to {out}\n" and "\r" not in result.stderr, result


def test_a_34_class_model_writes_label_ids_as_they_are(synthetic_root, tmp_path):
    # The original script's head: 34 outputs, the label ids themselves; nothing may map them a second time.
    torch.manual_seed(0)
    model = build_model(num_classes=34, weights=None, output_stride=16).eval()
    assert classes_of(model).cityscapes_mode == "labelId"
    image = synthetic_root / "leftImg8bit" / "val"
    written = predict_split(model, synthetic_root, "val", tmp_path / "ids", progress=False)
    frame = next(image.rglob("*.png"))
    expected = predict(model, normalize(read_image(frame))[None])[0].numpy()
    png = cv2.imread(str(next(p for p in written if p.name == frame.name)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(png, expected)  # labelIds out = the model's own classes
    label_ids = np.array([[7, 26, 1, 33]], dtype=np.uint8)
    np.testing.assert_array_equal(encode_prediction(label_ids, "trainIds", "labelId"), [[0, 13, 255, 18]])
    assert classes_of(build_model(5, weights=None, aux_loss=False)).names[:2] == ("class 0", "class 1")


def test_predictions_never_replace_inputs_or_each_other(model, synthetic_root, tmp_path):
    photos = tmp_path / "photos"
    (photos / "a").mkdir(parents=True)
    (photos / "b").mkdir()
    frame = next((synthetic_root / "leftImg8bit" / "val").rglob("*.png"))
    for name in ("a/x.png", "b/x.png"):
        (photos / name).write_bytes(frame.read_bytes())
    # the same name in two sub-folders: the sub-folders are kept
    written = predict_images(model, [photos], tmp_path / "out", progress=False)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == ["a/x.png", "b/x.png"]
    with pytest.raises(ValueError, match="would replace an input image"):
        predict_images(model, [photos], photos, progress=False)
    (photos / "a" / "x.jpg").write_bytes(cv2.imencode(".jpg", cv2.imread(str(frame)))[1].tobytes())
    with pytest.raises(ValueError, match="both .*x.jpg.* and .*x.png|both .*x.png.* and .*x.jpg"):
        predict_images(model, [photos / "a" / "x.jpg", photos / "b" / "x.png"], tmp_path / "flat", progress=False)
    assert not (tmp_path / "flat").exists()  # refused before writing anything
    with pytest.raises(ValueError, match="inside the dataset folder"):
        predict_split(model, synthetic_root, "val", synthetic_root / "preds", progress=False)
    assert not (synthetic_root / "preds").exists()


def test_decoding_workers_write_the_same_files(model, synthetic_root, tmp_path):
    serial = predict_split(model, synthetic_root, "val", tmp_path / "serial", progress=False, num_workers=0)
    parallel = predict_split(model, synthetic_root, "val", tmp_path / "parallel", progress=False, num_workers=2)
    assert [p.relative_to(tmp_path / "parallel") for p in parallel] == [p.relative_to(tmp_path / "serial")
                                                                         for p in serial]
    for a, b in zip(serial, parallel):
        assert a.read_bytes() == b.read_bytes(), b
    assert not list((tmp_path / "parallel").rglob("*.partial"))


def test_a_bad_photo_among_good_ones_is_named_and_skipped_and_fails_at_the_end(checkpoint, model, synthetic_root,
                                                                              tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    frames = sorted((synthetic_root / "leftImg8bit" / "val").rglob("*.png"))
    for i, frame in enumerate(frames):
        (photos / f"{i}.png").write_bytes(frame.read_bytes())
    (photos / "1.png").write_bytes(b"not a png")
    jpeg = cv2.imencode(".jpg", cv2.imread(str(frames[0])))[1].tobytes()
    (photos / "3.jpg").write_bytes(jpeg[:len(jpeg) // 2])  # libjpeg would decode it with a grey bottom half
    capsys.readouterr()
    for workers in (2, 0):  # found in a DataLoader worker or in this process: the same lines
        out = tmp_path / f"out{workers}"
        with pytest.raises(DatasetError, match="^2 of 4 images could not be read and were skipped .*the other 2 "
                                               "predictions were written$") as info:
            predict_images(model, [photos], out, progress=False, num_workers=workers)
        assert "\n" not in str(info.value) and "DataLoader" not in str(info.value)
        assert sorted(p.name for p in out.iterdir()) == ["0.png", "2.png"]  # the good ones, and only they
        assert capsys.readouterr().err.splitlines() == [
            f"error: {photos / '1.png'}: unreadable or corrupt image (expected a PNG, JPEG, BMP, TIFF or WebP "
            f"image); skipped",
            f"error: {photos / '3.jpg'}: truncated or corrupt image (it does not decode completely); skipped"]
    command = ["predict", "--checkpoint", str(checkpoint), "--images", str(photos), "--out", str(tmp_path / "cli")]
    assert main(command) == 1
    lines = capsys.readouterr().err.splitlines()  # a progress bar's lines, then one line per bad image, then why
    assert "Traceback" not in "".join(lines) and "DataLoader" not in "".join(lines), lines
    assert [line for line in lines if line.startswith("error: ")] == [
        f"error: {photos / '1.png'}: unreadable or corrupt image (expected a PNG, JPEG, BMP, TIFF or WebP image); "
        f"skipped",
        f"error: {photos / '3.jpg'}: truncated or corrupt image (it does not decode completely); skipped",
        "error: 2 of 4 images could not be read and were skipped (each named above); the other 2 predictions were "
        "written"], lines
    assert lines[-1].startswith("error: 2 of 4")
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["0.png", "2.png"]


def test_photos_are_converted_to_8bit_rgb_as_opencv_reads_them(checkpoint, model, synthetic_root, tmp_path):
    from PIL import Image

    frame = next((synthetic_root / "leftImg8bit" / "val").rglob("*.png"))
    rgb = read_image(frame)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    low = np.random.default_rng(0).integers(0, 256, rgb.shape, dtype=np.uint16)  # the low byte: dropped
    photos = tmp_path / "photos"
    photos.mkdir()
    palette = Image.fromarray(rgb).quantize(16)
    palette.save(photos / "palette.png")
    Image.fromarray(np.dstack([grey, np.full_like(grey, 100)]), "LA").save(photos / "grey_alpha.png")
    Image.fromarray(rgb).convert("CMYK").save(photos / "cmyk.jpg", quality=95)
    cv2.imwrite(str(photos / "grey.png"), grey)
    cv2.imwrite(str(photos / "grey16.png"), (grey.astype(np.uint16) << 8) | low[..., 0])
    cv2.imwrite(str(photos / "rgb16.png"), ((rgb.astype(np.uint16) << 8) | low)[..., ::-1])
    cv2.imwrite(str(photos / "rgba.png"), np.dstack([rgb[..., ::-1], np.full_like(grey, 7)]))
    expected = {"grey": np.dstack([grey] * 3), "grey_alpha": np.dstack([grey] * 3), "grey16": np.dstack([grey] * 3),
                "rgb16": rgb, "rgba": rgb, "palette": np.array(palette.convert("RGB")),
                "cmyk": cv2.imread(str(photos / "cmyk.jpg"), cv2.IMREAD_COLOR)[..., ::-1]}
    assert np.abs(expected["cmyk"].astype(int) - rgb).mean() < 3  # CMYK back to the colours it was made of
    for name, pixels in expected.items():
        np.testing.assert_array_equal(read_image(next(photos.glob(f"{name}.*")), strict=False), pixels,
                                      err_msg=name)
    with pytest.raises(DatasetError, match="grey.png: expected an 8-bit RGB image, found 1 channel"):
        read_image(photos / "grey.png")  # a dataset's frames are read as strictly as before
    written = predict_images(model, [photos], tmp_path / "out", progress=False, num_workers=0)
    assert sorted(p.stem for p in written) == sorted(expected)
    for path in written:  # each predicted as the 8-bit RGB image it was read as
        colours = encode_prediction(predict(model, image_tensor(expected[path.stem])[None])[0],
                                    "color")
        np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], colours, err_msg=path.name)
    assert main(["predict", "--checkpoint", str(checkpoint), "--images", str(photos / "rgb16.png"), "--out",
                 str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "rgb16.png").is_file()


def test_a_failed_write_is_raised(model, synthetic_root, tmp_path):
    frame = next((synthetic_root / "leftImg8bit" / "val").rglob("*.png"))
    (tmp_path / "out" / frame.name).mkdir(parents=True)  # a folder where the prediction file should go
    with pytest.raises(OutputError, match="writing failed"):  # raised in a writer thread, re-raised here
        predict_images(model, [frame], tmp_path / "out", progress=False, num_workers=0, overwrite=True)


def test_sliding_windows_cover_the_frame_flush_with_its_edges():
    from seg_utils.inference import sliding_windows

    windows = sliding_windows((256, 512), (128, 256))  # default stride: two thirds, 85 x 170
    assert [(y, x) for y, x, _, _ in windows] == [(y, x) for y in (0, 85, 128) for x in (0, 170, 256)]
    covered = np.zeros((256, 512), dtype=int)
    for y, x, h, w in windows:
        assert (h, w) == (128, 256)
        covered[y:y + h, x:x + w] += 1
    assert covered.min() >= 1
    assert sliding_windows((100, 200), (128, 256)) == [(0, 0, 100, 200)]  # a frame smaller than the crop: one
