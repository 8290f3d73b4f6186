"""The command line: each command end to end, and failures as one line without a traceback."""

import dataclasses
import json
import shutil

import cv2
import numpy as np
import pytest

from seg_utils.cityscapes import find_samples
from seg_utils.cli import build_parser, main
from seg_utils.config import DEFAULT_PROFILES, PROFILES, TrainConfig, default_profile_rule
from seg_utils.images import read_label
from seg_utils.labels import label_ids_to_train_ids, train_ids_to_label_ids


def test_synth_then_check(tmp_path, capsys):
    out = tmp_path / "cs"
    assert main(["synth", str(out), "--train", "2", "--val", "1", "--test", "1", "--size", "64x128"]) == 0
    assert len(find_samples(out, "train")) == 2
    assert main(["check", str(out)]) == 0
    assert "OK" in capsys.readouterr().out


def test_synth_bad_size_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["synth", str(tmp_path / "x"), "--size", "big"])
    assert info.value.code == 2
    assert "expected HEIGHTxWIDTH" in capsys.readouterr().err


@pytest.fixture
def perfect_predictions(synthetic_root, tmp_path):
    """Ground truth written back as predictions, with one class confused on one frame."""
    out = tmp_path / "preds"
    for i, sample in enumerate(find_samples(synthetic_root, "val")):
        label_ids = read_label(sample.label_path)
        if i == 0:  # predict every car as truck on the first frame
            label_ids = np.where(label_ids == 26, 27, label_ids).astype(np.uint8)
        (out / sample.city).mkdir(parents=True, exist_ok=True)
        # evaluated classes only, as a model would predict them
        cv2.imwrite(str(out / sample.city / sample.image_path.name),
                    train_ids_to_label_ids(label_ids_to_train_ids(label_ids)))
    return out


def test_evaluate_prints_the_table_and_writes_json(synthetic_root, perfect_predictions, tmp_path, capsys):
    report = tmp_path / "scores" / "val.json"
    args = ["evaluate", "--data-root", str(synthetic_root), "--split", "val", "--predictions",
            str(perfect_predictions), "--json", str(report)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "road" in out
    scores = json.loads(report.read_text())
    assert {"miou", "category_miou", "pixel_acc", "mean_acc", "fw_iou", "class_iou"} <= scores.keys()
    assert scores["class_iou"]["road"] == 1.0 and scores["class_iou"]["car"] < 1.0
    assert 0 < scores["miou"] < 1 and scores["num_frames"] == 3


@pytest.mark.parametrize("case", ["test split", "missing prediction", "rgb prediction"])
def test_evaluate_failures_are_one_line(synthetic_root, perfect_predictions, case, capsys):
    split = "val"
    if case == "test split":
        split = "test"
    elif case == "missing prediction":
        next(perfect_predictions.rglob("*.png")).unlink()
    else:
        path = next(perfect_predictions.rglob("*.png"))
        cv2.imwrite(str(path), np.dstack([read_label(path)] * 3))
    args = ["evaluate", "--data-root", str(synthetic_root), "--split", split, "--predictions", str(perfect_predictions)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err


def test_train_without_a_dataset_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    assert main(["train", "--out", str(tmp_path / "run"), "--profile", "smoke"]) == 1
    assert "no dataset" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def test_an_error_in_a_data_worker_is_still_one_line(dataset_copy, tmp_path, capsys):
    # A corrupt training label is found inside a DataLoader worker, which re-raises it with the worker's
    # traceback in the message; the command still prints one line naming the file.
    for label in (dataset_copy / "gtFine" / "train").rglob("*_labelTrainIds.png"):
        label.unlink()
    for label in (dataset_copy / "gtFine" / "train").rglob("*_gtFine_labelIds.png"):
        label.write_bytes(b"not a png")
    args = ["train", "--data-root", str(dataset_copy), "--out", str(tmp_path / "run"), "--profile", "smoke",
            "--iters", "1", "--weights", "none", "--workers", "1"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "_gtFine_labelIds.png" in err, err
    assert "Traceback" not in err and "DataLoader" not in err, err


@pytest.mark.parametrize("name", list(PROFILES))
def test_train_accepts_every_profile(name):
    args = build_parser().parse_args(["train", "--profile", name, "--out", "run"])
    assert args.profile == name


def test_train_options_are_the_config_fields_with_their_own_help():
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    options = {action.dest: action for action in train._actions}
    assert default_profile_rule() in options["profile"].help.replace("\n", " ")
    for name, _ in DEFAULT_PROFILES.values():
        assert name in default_profile_rule()
    fields = [f for f in dataclasses.fields(TrainConfig) if f.metadata["cli"]]
    assert {f.name for f in fields} == set(options) - {"help", "profile"}
    for f in fields:
        assert options[f.name].help.startswith(f.metadata["help"]), f.name
        assert f"--{f.name.replace('_', '-')}" in options[f.name].option_strings
