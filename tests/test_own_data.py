"""Your own data: a class table as data, the plain images/masks folder, and fine-tuning a Cityscapes model onto it.

The folders here are made by hand, the way a reader's labelling-tool export would look: 3 classes, photos of 61x83
(not a multiple of 8), PNG and JPEG photos, index masks and colour masks. Each goes through the command line:
check, train, predict, evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from seg_utils.check import check_dataset
from seg_utils.checkpoint import CHECKPOINT_FORMAT
from seg_utils.classes import ClassTable, ClassTableError
from seg_utils.cli import main
from seg_utils.folder import FolderDataset, read_mask
from seg_utils.images import DatasetError
from seg_utils.inference import classes_of, load_model
from seg_utils.layouts import open_dataset, open_layout
from seg_utils.model import build_model, fine_tune_from

THREE = {"classes": [{"name": "sky", "color": [70, 130, 180]}, {"name": "grass", "color": [0, 200, 0]},
                     {"name": "person", "color": [220, 20, 60]}], "ignore_index": 255, "ignore_color": [255, 255, 255]}
SIZE = (61, 83)
RUN = ["--profile", "smoke", "--weights", "none", "--iters", "4", "--val-every", "2", "--crop", "48x64",
       "--batch", "2", "--workers", "0", "--warmup-iters", "1", "--output-stride", "16", "--no-amp"]


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return (photo, mask of class indices with a few ignored pixels): sky above grass, a person standing."""
    h, w = SIZE
    mask = np.zeros(SIZE, np.uint8)
    mask[int(rng.integers(h // 3, 2 * h // 3)):] = 1
    y, x = int(rng.integers(5, h - 25)), int(rng.integers(5, w - 12))
    mask[y:y + 20, x:x + 7] = 2
    colours = np.array([[120, 170, 230], [40, 150, 40], [200, 60, 60]], np.float32)
    photo = np.clip(colours[mask] + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    mask[y - 1, x:x + 7] = 255  # an unsure edge
    return photo, mask


def make_folder(root: Path, masks: str = "mixed", photos: str = "mixed", table: dict = THREE,
                train: int = 4, val: int = 3, seed: int = 0) -> Path:
    """Write a plain folder by hand: ``masks`` index | colour | mixed, ``photos`` png | jpg | mixed."""
    rng = np.random.default_rng(seed)
    palette = np.array([c["color"] for c in table["classes"]] + [table.get("ignore_color", [0, 0, 0])], np.uint8)
    (root).mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps(table))
    for split, n in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            photo, mask = _scene(rng)
            jpeg = photos == "jpg" or (photos == "mixed" and i % 2)
            cv2.imwrite(str(root / "images" / split / f"img_{i:03d}{'.jpg' if jpeg else '.png'}"), photo[..., ::-1])
            colour = masks == "colour" or (masks == "mixed" and i % 2 == 0)
            index = np.where(mask == 255, len(table["classes"]), mask)
            out = palette[index][..., ::-1] if colour else np.where(mask == 255, table.get("ignore_index", 255), mask)
            cv2.imwrite(str(root / "masks" / split / f"img_{i:03d}.png"), out.astype(np.uint8))
    return root


# ------------------------------------------------------------------------------------------------------------
# The class table


def test_cityscapes_table_from_cityscapesscripts():
    table = ClassTable.cityscapes()
    assert len(table) == 19 and table.names[0] == "road" and table.colors[0] == (128, 64, 128)
    assert table.cityscapes_mode == "trainId" and ClassTable.cityscapes("labelId").cityscapes_mode == "labelId"
    assert ClassTable.from_dict(table.to_dict()) == table
    assert ClassTable.from_dict(THREE).cityscapes_mode is None


def test_class_table_file_round_trip(tmp_path):
    table = ClassTable.from_dict(THREE)
    again = ClassTable.load(table.save(tmp_path / "classes.json"))
    assert again == table and again.ignore_color == (255, 255, 255)
    assert again.palette[255].tolist() == [255, 255, 255] and again.palette[2].tolist() == [220, 20, 60]
    minimal = ClassTable.from_dict({"classes": THREE["classes"]})
    assert minimal.ignore_index == 255 and minimal.ignore_color is None


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["classes"].append({"name": "sky", "color": [1, 2, 3]}), "same name 'sky'"),
    (lambda d: d["classes"].append({"name": "tree", "color": [0, 200, 0]}), "same colour [0, 200, 0]"),
    (lambda d: d.update(ignore_index=1), "ignore_index must be an integer from 3"),
    (lambda d: d.update(ignore_color=[0, 200, 0]), "also the colour of class 'grass'"),
    (lambda d: d["classes"][0].update(color=[300, 0, 0]), "integers 0..255"),
    (lambda d: d.pop("classes"), "a \"classes\" list"),
    (lambda d: d.update(classes=[]), "no classes"),
])
def test_class_table_refuses(tmp_path, change, expected):
    data = json.loads(json.dumps(THREE))
    change(data)
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ClassTableError, match=str(path)) as err:
        ClassTable.load(path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_class_table_unreadable(tmp_path):
    (tmp_path / "bad.json").write_text('{"classes": [')
    with pytest.raises(ClassTableError, match="bad.json: not valid JSON"):
        ClassTable.load(tmp_path / "bad.json")
    with pytest.raises(ClassTableError, match="missing.json: no class table"):
        ClassTable.load(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------------------------
# The folder layout


def test_index_and_colour_masks_read_the_same(tmp_path):
    colour = FolderDataset(make_folder(tmp_path / "c", masks="colour"), "train")
    index = FolderDataset(make_folder(tmp_path / "i", masks="index"), "train")
    for i in range(len(colour)):
        a, b = colour.load_target(i), index.load_target(i)
        np.testing.assert_array_equal(a, b)
        assert set(np.unique(a)) <= {0, 1, 2, 255} and (a == 255).any()
        image, target = colour[i]
        assert image.dtype == torch.uint8 and image.shape == (3, *SIZE) and target.shape == SIZE


def test_own_ignore_index_becomes_255(tmp_path):
    table = {**THREE, "ignore_index": 200}
    dataset = FolderDataset(make_folder(tmp_path / "d", masks="index", table=table), "val")
    target = dataset.load_target(0)
    assert (target == 255).any() and not (target == 200).any()


def test_layouts(tmp_path, synthetic_root):
    assert open_layout(synthetic_root).name == "cityscapes"
    assert open_layout(make_folder(tmp_path / "f")).name == "folder"
    assert open_layout(synthetic_root).table == ClassTable.cityscapes()
    assert open_layout(tmp_path / "f").table == ClassTable.from_dict(THREE)
    (tmp_path / "other" / "pictures").mkdir(parents=True)
    with pytest.raises(DatasetError, match="neither Cityscapes .* found pictures/"):
        open_layout(tmp_path / "other")
    assert len(open_dataset(tmp_path / "f", "val")) == 3


def test_test_split_without_masks(tmp_path):
    root = make_folder(tmp_path / "f")
    (root / "images" / "test").mkdir()
    cv2.imwrite(str(root / "images" / "test" / "x.jpg"), np.zeros((*SIZE, 3), np.uint8))
    test = FolderDataset(root, "test")
    assert not test.has_labels and (test.load_target(0) == 255).all()


def test_a_turned_phone_photo_is_read_as_shown(tmp_path):
    """A JPEG stored landscape with an EXIF orientation of 6 (shown turned a quarter, portrait): its mask is drawn on
    what the labelling tool showed, so every reader, and the header check before training, turns it."""
    from PIL import Image

    root = make_folder(tmp_path / "f", photos="png", masks="index", train=2, val=1)
    photo = root / "images" / "train" / "img_000.png"
    stored = np.asarray(Image.open(photo))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(stored, 1))).save(photo.with_suffix(".jpg"), exif=exif)
    photo.unlink()
    dataset = FolderDataset(root, "train")
    assert dataset.load_image(0).shape == (*SIZE, 3)  # as shown: the mask's size
    dataset.layout.check_headers(dataset.samples)
    assert check_dataset(root).ok


def test_mask_errors_name_the_file(tmp_path):
    table = ClassTable.from_dict(THREE)
    bad = tmp_path / "bad.png"
    cv2.imwrite(str(bad), np.full((4, 5), 7, np.uint8))
    with pytest.raises(DatasetError, match=r"bad.png: mask values \[7\] outside the class table"):
        read_mask(bad, table)
    colours = np.zeros((4, 5, 3), np.uint8)
    colours[:] = (180, 130, 70)  # BGR on disk: sky everywhere, but RGB (1, 2, 3) on 2 pixels and another on 1
    colours[0, :2] = (3, 2, 1)
    colours[1, 1] = (9, 9, 9)
    cv2.imwrite(str(bad), colours)
    with pytest.raises(DatasetError, match=r"colour \[1, 2, 3\] on 2 pixels is not in the class table and 1 more"):
        read_mask(bad, table)
    jpeg = tmp_path / "mask.jpg"
    cv2.imwrite(str(jpeg), np.zeros((4, 5), np.uint8))
    with pytest.raises(DatasetError, match="mask.jpg: a JPEG mask; masks must be PNG .lossy"):
        read_mask(jpeg, table)


# ------------------------------------------------------------------------------------------------------------
# From the command line


@pytest.fixture(scope="module")
def run(module_tmp) -> tuple[Path, Path]:
    """A folder made by hand (colour and index masks, PNG and JPEG photos, 61x83, 3 classes), checked and trained
    from the command line: (data folder, run folder)."""
    tmp = module_tmp("own")
    root = make_folder(tmp / "data")
    assert main(["check", str(root)]) == 0
    assert main(["train", "--data-root", str(root), "--out", str(tmp / "run"), *RUN]) == 0
    return root, tmp / "run"


def test_folder_trains_predicts_and_evaluates(run, tmp_path):
    root, folder = run
    model = load_model(folder / "best.pt")
    assert classes_of(model) == ClassTable.from_dict(THREE)  # the checkpoint carries its table
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(folder / "best.pt"), "--data-root", str(root), "--split", "val",
                 "--out", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["img_000.png", "img_001.png", "img_002.png"]  # OUT/<name>.png, index masks
    pred = cv2.imread(str(out / written[0]), cv2.IMREAD_UNCHANGED)
    assert pred.shape == SIZE and pred.dtype == np.uint8 and pred.max() < 3
    assert main(["evaluate", "--data-root", str(root), "--predictions", str(out), "--json",
                 str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores["class_iou"]) == {"sky", "grass", "person"} and scores["num_frames"] == 3
    assert "category_miou" not in scores  # Cityscapes' categories are Cityscapes' only
    history = json.loads((folder / "history.json").read_text())
    assert history["val_miou"][-1] == pytest.approx(scores["miou"], abs=1e-12)  # float32: the very same pixels
    # its own masks (colour and index) as predictions score 100%
    assert main(["evaluate", "--data-root", str(root), "--predictions", str(root / "masks" / "val"), "--json",
                 str(tmp_path / "perfect.json")]) == 0
    perfect = json.loads((tmp_path / "perfect.json").read_text())
    assert perfect["miou"] == 1.0 and perfect["pixel_acc"] == 1.0


def test_predict_colours_are_the_tables(run, tmp_path):
    root, folder = run
    assert main(["predict", "--checkpoint", str(folder / "last.pt"), "--images", str(root / "images" / "val"),
                 "--out", str(tmp_path / "c"), "--format", "color"]) == 0
    colours = cv2.imread(str(tmp_path / "c" / "img_000.png"))[..., ::-1].reshape(-1, 3)
    assert {tuple(c) for c in np.unique(colours, axis=0)} <= {tuple(c["color"]) for c in THREE["classes"]}
    assert main(["predict", "--checkpoint", str(folder / "last.pt"), "--images", str(root / "images" / "val"),
                 "--out", str(tmp_path / "l"), "--format", "labelIds"]) == 1  # Cityscapes' format only


def test_cityscapes_classes_are_fixed(synthetic_root, tmp_path, capsys):
    other = tmp_path / "classes.json"
    other.write_text(json.dumps(THREE))
    assert main(["check", str(synthetic_root), "--classes", str(other), "--quick"]) == 1
    assert "a class table for a Cityscapes folder" in capsys.readouterr().err
    assert main(["check", str(synthetic_root), "--quick"]) == 0


def test_no_val_split_is_one_warning_line(tmp_path):
    import subprocess
    import sys

    root = make_folder(tmp_path / "data", train=2, val=0)
    done = subprocess.run([sys.executable, "-m", "seg_utils", "train", "--data-root", str(root), "--out",
                           str(tmp_path / "run"), *RUN, "--iters", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"warning: training without validation: {root / 'images' / 'val'}: no photos (expected "
                     "<name>.png, .jpg, .jpeg, .bmp, .tif, .tiff or .webp files)"], done.stderr


def test_a_split_is_there_when_its_scanner_would_read_a_file(tmp_path):
    """One rule for check and train (``Layout.has_split``): stray and hidden files are no split; a mask alone is
    one, with a problem."""
    root = make_folder(tmp_path / "data", train=2, val=0)
    (root / "images" / "val" / "Thumbs.db").write_bytes(b"x")
    (root / "images" / "val" / ".DS_Store").write_bytes(b"x")
    (root / "masks" / "val" / ".ipynb_checkpoints").mkdir()
    (root / "masks" / "val" / ".ipynb_checkpoints" / "img_000-checkpoint.png").write_bytes(b"x")
    assert not open_layout(root).has_split("val")
    report = check_dataset(root, decode=False)
    assert report.problems == [] and "no val split: training runs without validation" in report.notes
    mask = root / "masks" / "val" / "img_000.png"
    cv2.imwrite(str(mask), np.zeros((8, 8), np.uint8))
    assert open_layout(root).has_split("val")
    assert check_dataset(root, decode=False).problems == [
        f"{root / 'images' / 'val'}: no photos (expected <name>.png, .jpg, .jpeg, .bmp, .tif, .tiff or .webp files)"]


def test_resume_refuses_other_classes(run, tmp_path, capsys):
    root, folder = run
    other = {"classes": THREE["classes"][:2] + [{"name": "dog", "color": [220, 20, 60]}]}
    (tmp_path / "other.json").write_text(json.dumps(other))
    capsys.readouterr()
    assert main(["train", "--data-root", str(root), "--out", str(folder), *RUN, "--resume", "--classes",
                 str(tmp_path / "other.json")]) == 1
    assert "was written by a run on other classes (3: sky, grass, person)" in capsys.readouterr().err
    recoloured = dict(THREE, ignore_color=[1, 1, 1])  # the same names: the message says what differs
    (tmp_path / "recoloured.json").write_text(json.dumps(recoloured))
    assert main(["train", "--data-root", str(root), "--out", str(folder), *RUN, "--resume", "--classes",
                 str(tmp_path / "recoloured.json")]) == 1
    assert "was written by a run on the same class names with other colours or ignore values" in \
        capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# Fine-tuning


def _cityscapes_checkpoint(path: Path, aux: bool = True) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = build_model(19, weights=None, aux_loss=aux, output_stride=16).state_dict()
    torch.save({"format": CHECKPOINT_FORMAT, "model": state, "iteration": 1, "config": {"iters": 1},
                "classes": ClassTable.cityscapes().to_dict()}, path)
    return state


def test_fine_tune_loads_replaces_and_keeps_by_name(tmp_path):
    old = _cityscapes_checkpoint(tmp_path / "best.pt")
    table = ClassTable.from_dict({"classes": [{"name": "road", "color": [128, 64, 128]},
                                              {"name": "kerb", "color": [250, 170, 30]},
                                              {"name": "person", "color": [220, 20, 60]}]})
    model, note = fine_tune_from(tmp_path / "best.pt", table, aux_loss=True, output_stride=16)
    assert note == ("best.pt: all but the class layers loaded (backbone, ASPP, head convs); class layer of the "
                    "classifier and aux classifier replaced (19 classes -> 3); kept by name: road, person; new: kerb")
    new = model.state_dict()
    for key in old:
        if key.startswith(("classifier.4.", "aux_classifier.4.")):
            assert new[key].shape[0] == 3
            torch.testing.assert_close(new[key][0], old[key][0])  # road: Cityscapes' class 0
            torch.testing.assert_close(new[key][2], old[key][11])  # person: Cityscapes' class 11
            assert not torch.equal(new[key][1], old[key][1])  # kerb: new, not sidewalk's row
        else:
            torch.testing.assert_close(new[key], old[key], msg=key)  # backbone, ASPP, head convs: loaded


def test_fine_tune_same_table_loads_everything(tmp_path):
    old = _cityscapes_checkpoint(tmp_path / "c.pt", aux=False)
    model, note = fine_tune_from(tmp_path / "c.pt", ClassTable.cityscapes(), aux_loss=True, output_stride=16)
    assert note == "c.pt: every weight loaded (same 19 classes), aux head new"
    torch.testing.assert_close(model.classifier[4].weight, old["classifier.4.weight"])


def test_fine_tune_same_names_other_colours_loads_everything(tmp_path):
    """Colours and the ignore colour are how masks are read and drawn, not weights: the same names in the same order
    are the same classes."""
    old = _cityscapes_checkpoint(tmp_path / "c.pt")
    table = ClassTable.cityscapes().to_dict()
    table["classes"][0]["color"] = [1, 2, 3]
    table["ignore_color"] = [255, 255, 255]
    model, note = fine_tune_from(tmp_path / "c.pt", ClassTable.from_dict(table), aux_loss=True, output_stride=16)
    assert note == "c.pt: every weight loaded (same 19 classes)"
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, old[key], msg=key)


def test_train_weights_fine_tunes_a_cityscapes_checkpoint(tmp_path, capsys):
    _cityscapes_checkpoint(tmp_path / "best.pt")
    table = {"classes": [{"name": "sky", "color": [70, 130, 180]}, {"name": "grass", "color": [0, 200, 0]},
                         {"name": "person", "color": [220, 20, 60]}], "ignore_color": [255, 255, 255]}
    root = make_folder(tmp_path / "data", table=table, train=2, val=1)
    args = [a for a in RUN if a not in ("--weights", "none")]
    assert main(["train", "--data-root", str(root), "--out", str(tmp_path / "run"), *args, "--iters", "2",
                 "--weights", str(tmp_path / "best.pt")]) == 0
    out = capsys.readouterr().out
    assert "best.pt: all but the class layers loaded (backbone, ASPP, head convs); class layer of the classifier " \
           "and aux classifier replaced (19 classes -> 3); kept by name: sky, person; new: grass" in out
    assert classes_of(load_model(tmp_path / "run" / "last.pt")).names == ("sky", "grass", "person")
