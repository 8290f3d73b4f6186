"""Using a trained model: photos at the model's pixel scale, overlays, video in and out, ONNX export and
``predict --onnx``. A checkpoint written by ``train`` (two iterations on the synthetic set) serves them all."""

import contextlib
import io
import re

import cv2
import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from seg_utils import export
from seg_utils.cityscapes import find_samples
from seg_utils.cli import main
from seg_utils.images import read_image
from seg_utils.inference import classes_of, load_model, photo_scale, predict
from seg_utils.media import draw_legend, encode_prediction
from seg_utils.predictions import predict_images, predict_video
from seg_utils.transforms import image_tensor
from seg_utils.video import VideoReader, read_frames

TRAIN = ["--profile", "smoke", "--iters", "2", "--val-every", "2", "--no-amp", "--workers", "0", "--weights", "none",
         "--output-stride", "16", "--crop", "48x96", "--batch", "2", "--seed", "0"]


@pytest.fixture(scope="module")
def checkpoint(synthetic_root, module_tmp):
    run = module_tmp("run")
    assert main(["train", "--data-root", str(synthetic_root), "--out", str(run), *TRAIN]) == 0
    return run / "best.pt"


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(checkpoint)


@pytest.fixture(scope="module")
def frame(synthetic_root):
    return read_image(find_samples(synthetic_root, "val")[0].image_path)  # 64x128, the training frames' size


def _index(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_the_checkpoint_records_its_training_frame_size(checkpoint, model):
    assert torch.load(checkpoint, weights_only=True)["info"]["frame_size"] == [64, 128]
    assert model.info.frame_size == (64, 128) and model.info.scale_range == (0.5, 1.0)  # the smoke profile's rescaling


def test_photo_scale_matches_long_sides_at_the_middle_of_the_training_rescaling():
    assert photo_scale((128, 256), (64, 128)) == 0.5
    assert photo_scale((256, 128), (64, 128)) == 0.5  # a portrait photo: its long side is its height
    assert photo_scale((3024, 4032), (1024, 2048), (0.5, 2.0)) == pytest.approx(0.508, abs=1e-3)  # the recipe's
    assert photo_scale((128, 256), (64, 128), (0.5, 1.0)) == pytest.approx(0.5 * 0.5**0.5)  # trained on smaller
    assert photo_scale((100, 100), None) == 1.0  # a checkpoint that records no frame size


def test_a_photo_is_predicted_at_the_training_scale_unless_told(model, frame, tmp_path):
    photo = tmp_path / "photo.png"  # the val frame at twice its size: objects twice as many pixels as in training
    cv2.imwrite(str(photo), cv2.resize(frame, (256, 128), interpolation=cv2.INTER_LINEAR)[:, :, ::-1])
    image = image_tensor(read_image(photo))[None]
    (default,) = predict_images(model, [photo], tmp_path / "auto", fmt="index", progress=False, num_workers=0)
    (as_is,) = predict_images(model, [photo], tmp_path / "as-is", fmt="index", progress=False, num_workers=0,
                              scale=1.0)
    factor = 0.5 * 0.5**0.5  # long sides 256 -> 128, times the middle of the smoke profile's rescaling 0.5-1.0
    np.testing.assert_array_equal(_index(default), predict(model, image, scales=(factor,))[0].numpy())
    np.testing.assert_array_equal(_index(as_is), predict(model, image)[0].numpy())
    assert _index(default).shape == (128, 256) and (_index(default) != _index(as_is)).any()


def test_a_jpeg_photo_gives_an_overlay_of_its_own_size(checkpoint, model, frame, tmp_path, capsys):
    photo = tmp_path / "phone.jpg"  # an odd size, not the training frames' shape
    Image.fromarray(cv2.resize(frame, (203, 101))).save(photo, quality=92)
    assert main(["predict", "--checkpoint", str(checkpoint), "--images", str(photo), "--out",
                 str(tmp_path / "out"), "--format", "overlay"]) == 0
    picture = np.asarray(Image.open(tmp_path / "out" / "phone.png"))
    image = read_image(photo)
    assert picture.shape == image.shape == (101, 203, 3)
    factor = photo_scale((101, 203), model.info.frame_size, model.info.scale_range)
    labels = predict(model, image_tensor(image)[None], scales=(factor,))[0]
    colours = classes_of(model).palette[labels.numpy()]
    expected = (0.5 * image.astype(np.float32) + 0.5 * colours).astype(np.uint8)
    assert np.abs(picture.astype(int) - expected).max() <= 1
    assert "wrote 1 overlay predictions" in capsys.readouterr().out


def test_a_legend_names_the_classes_present_in_a_corner(model, frame):
    labels = predict(model, image_tensor(frame)[None])[0].numpy()
    plain = encode_prediction(labels, "overlay", classes_of(model), frame)
    named = encode_prediction(labels, "overlay", classes_of(model), frame, legend=True)
    assert named.shape == plain.shape
    changed = np.argwhere((named != plain).any(-1))
    assert changed.size and changed[:, 0].max() < 64 and changed[:, 1].max() < 128
    big = draw_legend(np.zeros((600, 900, 3), np.uint8), [0, 10, 13], "trainId")
    for i in (0, 10, 13):  # each class's swatch is drawn in its colour
        assert (big == classes_of(model).palette[i]).all(-1).any()


def test_a_video_gives_a_video_of_the_same_frames_size_and_rate(checkpoint, model, frame, tmp_path, capsys):
    clip = tmp_path / "clip.mp4"  # made by hand: 20 frames of 240x320 at 12 fps, the scene sliding left
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 12, (320, 240))
    big = cv2.resize(frame, (480, 240))
    for i in range(20):
        writer.write(np.ascontiguousarray(big[:, 8 * i:8 * i + 320, ::-1]))
    writer.release()
    assert main(["predict", "--checkpoint", str(checkpoint), "--images", str(clip), "--out",
                 str(tmp_path / "out"), "--format", "color"]) == 0
    out = tmp_path / "out" / "clip.mp4"
    with VideoReader(out) as video:
        info = video.info
    assert (info.frames, info.size, info.fps) == (20, (240, 320), 12.0)
    frames, inputs = read_frames(out), read_frames(clip)
    assert len(frames) == 20 and all(f.shape == (240, 320, 3) for f in frames)
    # each output frame is the colour map of that input frame's prediction (up to the codec's loss)
    for i in (0, 19):
        factor = photo_scale((240, 320), (64, 128), (0.5, 1.0))
        labels = predict(model, image_tensor(inputs[i])[None], scales=(factor,))[0]
        expected = classes_of(model).palette[labels.numpy()]
        assert np.abs(frames[i].astype(int) - expected).mean() < 8
    said = capsys.readouterr().out
    assert f"wrote {out}: 20 frames of 240x320 at 12 fps (color); sound is not copied" in said


def _handlers(path) -> list[bytes]:
    """Return the handler types an MP4's ``hdlr`` boxes name: ``vide`` for a video track, ``soun`` for sound."""
    data = path.read_bytes()
    return [data[m.start() + 12:m.start() + 16] for m in re.finditer(b"hdlr", data)]


def test_an_odd_sized_video_comes_back_as_the_file_holds_it_without_sound(model, frame, tmp_path):
    clip = tmp_path / "odd.avi"  # OpenCV's own MJPEG writer keeps odd sides (its FFmpeg writer does not)
    writer = cv2.VideoWriter(str(clip), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 5, (81, 61))
    for _ in range(3):
        writer.write(np.ascontiguousarray(cv2.resize(frame, (81, 61))[:, :, ::-1]))
    writer.release()
    with VideoReader(clip) as video:
        source = video.info
    assert (source.frames, source.size) == (3, (61, 81))
    out = tmp_path / "out" / "odd.mp4"
    done = predict_video(model, clip, out, "color", progress=False)
    with VideoReader(out) as video:
        stored = video.info
    # nothing rounds the size: OpenCV's FFmpeg writer drops the last row and column, and the result says so
    assert done == stored and (done.frames, done.size, done.fps) == (3, (60, 80), 5.0)
    assert [f.shape for f in read_frames(out)] == [(60, 80, 3)] * 3
    assert b"vide" in _handlers(out) and b"soun" not in _handlers(out)  # pictures only: no sound track


def test_an_unreadable_image_beside_a_video_leaves_the_video_predicted(checkpoint, frame, tmp_path, capsys):
    clip = tmp_path / "in" / "clip.avi"
    clip.parent.mkdir()
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 64))
    for _ in range(3):
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    (tmp_path / "in" / "broken.png").write_bytes(b"not a PNG")
    Image.fromarray(frame).save(tmp_path / "in" / "fine.png")
    assert main(["predict", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "in"), "--out",
                 str(tmp_path / "out")]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4", "fine.png"]
    assert len(read_frames(tmp_path / "out" / "clip.mp4")) == 3  # overlay, the default for a video
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1] == "error: 1 of 2 images could not be read and were skipped (each named above); the other 1 " \
                       "predictions were written"


@pytest.fixture(scope="module")
def exported(checkpoint, module_tmp):
    """The checkpoint exported by ``python -m seg_utils export``, and what the command printed."""
    model_file = module_tmp("onnx") / "model.onnx"
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        assert main(["export", "--checkpoint", str(checkpoint), "--out", str(model_file)]) == 0
    return model_file, said.getvalue()


def test_export_then_onnx_runtime_agrees_with_predict(checkpoint, synthetic_root, exported, tmp_path):
    model_file, said = exported
    agreement = float(re.search(r"same class on ([\d.]+)% of pixels", said).group(1))
    assert agreement >= 99.9, said
    mib = model_file.stat().st_size / 2**20
    assert f"wrote {model_file} ({mib:.0f} MiB): input 'image', float32 (N, 3, H, W) of any N, H and W" in said
    dims = onnx.load(model_file).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]  # named, not bounded
    # whole frames, and sliding windows (several windows of a frame go through the graph as one batch)
    for extra in ([], ["--slide", "--crop", "32x64"]):
        for how, source in (("--checkpoint", checkpoint), ("--onnx", model_file)):
            out = tmp_path / f"{how.strip('-')}{len(extra)}"
            assert main(["predict", how, str(source), "--data-root", str(synthetic_root), "--out", str(out),
                         "--format", "trainIds", *extra]) == 0
        files = sorted((tmp_path / f"checkpoint{len(extra)}").rglob("*.png"))
        assert len(files) == 3
        torch_pred = np.stack([_index(f) for f in files])
        onnx_pred = np.stack([_index(tmp_path / f"onnx{len(extra)}" / f.relative_to(f.parents[1])) for f in files])
        assert (torch_pred == onnx_pred).mean() >= 0.999


@pytest.mark.parametrize("shape", [(65, 3, 8, 8), (1, 3, 9, 7), (1, 3, 8, 8200)],
                         ids=["batch 65", "9x7", "8x8200"])
def test_the_onnx_file_runs_outside_the_bounds_it_was_traced_for(model, exported, shape):
    """export traces for batches of 1-64 and sides of 16-8192 pixels, but the file keeps no bounds: a larger batch,
    smaller frames and a wider one run, and give PyTorch's classes (docs/command-line.md, "Export to ONNX")."""
    images = torch.from_numpy(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    got = export.load_onnx(exported[0])(images)["out"]
    with torch.no_grad():
        expected = model(images)["out"]  # the model fixture is on the CPU, in float32
    assert got.shape == expected.shape == (shape[0], 19, *shape[2:])
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.999


def test_an_export_that_disagrees_is_not_written(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "MIN_AGREEMENT", 1.5)  # no graph can reach it: the check must refuse
    with pytest.raises(RuntimeError, match="not written: ONNX Runtime vs PyTorch on 3 frames"):
        export.export_onnx(checkpoint, tmp_path / "model.onnx", frames=export.check_frames((32, 64), count=3))
    assert list(tmp_path.iterdir()) == []
