"""``python -m seg_utils synth | check | evaluate | train | predict | export``: thin wrappers over the package.

Each command parses its arguments, calls one function of the package and prints. Expected failures
(a broken dataset, a missing file, a bad argument) end with one line on stderr and exit code 1, never
a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .config import parse_size

__all__ = ["main"]


_SYNTH_DEFAULTS = {"cityscapes": dict(train=20, val=5, test=5, size=(1024, 2048)),
                   "sidewalk": dict(train=24, val=8, test=4, size=(240, 320))}


def _cmd_synth(args: argparse.Namespace) -> int:
    from .synthetic import write_synthetic_cityscapes, write_synthetic_folder

    sizes = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in _SYNTH_DEFAULTS[args.kind].items()}
    write = write_synthetic_cityscapes if args.kind == "cityscapes" else write_synthetic_folder
    root = write(args.out, seed=args.seed, progress=None, **sizes)  # a bar on a terminal only
    what = "Cityscapes-format set" if args.kind == "cityscapes" else \
        "plain folder (images/, masks/, classes.json: a sidewalk robot's 6 classes)"
    h, w = sizes["size"]
    print(f"wrote a synthetic {what} to {root} "
          f"(train {sizes['train']}, val {sizes['val']}, test {sizes['test']} frames of {h}x{w})")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .check import check_dataset

    report = check_dataset(args.root, decode=not args.quick, progress=True, classes=args.classes)
    if report.counts:
        print(report.summary())
    for problem in report.problems:
        print(f"error: {problem}", file=sys.stderr)
    if report.problems:
        print(f"{len(report.problems)} problem{'s' if len(report.problems) > 1 else ''} found in {args.root}")
        return 1
    print(f"{args.root}: OK")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_predictions
    from .metrics import format_table, metrics_to_json
    from .outputs import atomic_write, output_file

    check = dict(data_root=args.data_root, inputs=[args.predictions], overwrite=args.overwrite, option="--json")
    if args.json:  # checked before the work (nothing created yet), written after it
        output_file(args.json, create=False, **check)
    result = evaluate_predictions(args.data_root, args.split, args.predictions, label_format=args.label_format,
                                  classes=args.classes)
    print(format_table(result))
    if args.json:
        output_file(args.json, **check)
        text = json.dumps(metrics_to_json(result), indent=2, allow_nan=False) + "\n"
        atomic_write(args.json, lambda f: f.write(text.encode()))
        print(f"scores written to {args.json}")
    return 0


def train_from_args(args: argparse.Namespace) -> dict:
    """Return the history of a run configured by the ``train`` command's arguments (unset = the profile's)."""
    import dataclasses

    from .config import TrainConfig
    from .engine import train

    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    return train(TrainConfig.from_profile(args.profile, **options), progress=None)


def predict_from_args(args: argparse.Namespace) -> list[Path]:
    """Run ``python -m seg_utils predict`` with parsed arguments; return the files written."""
    from .cityscapes import dataset_root
    from .device import pick_device
    from .inference import load_model
    from .layouts import open_layout
    from .predictions import default_format, plan_predictions, predict_split, write_inputs
    from .video import VideoReader, is_video, video_format

    # Inputs and outputs are checked before the model is loaded: a wrong argument fails at once.
    data_root = None if args.images else dataset_root(args.data_root)
    items = plan_predictions(args.out, images=args.images, data_root=data_root, split=args.split,
                             overwrite=args.overwrite, video_fmt=args.format)
    if args.onnx:
        from .export import load_onnx

        model = load_onnx(args.onnx)
    else:
        model = load_model(args.checkpoint, pick_device())
    options = dict(mode="slide" if args.slide else "whole", crop=tuple(args.crop), legend=args.legend,
                   scales=(0.75, 1.0, 1.25) if args.multi_scale else (1.0,), flip=args.multi_scale, progress=None)
    if args.images:  # photos and videos, as planned: brought to the model's pixel scale unless --scale says otherwise
        fmt = args.format or default_format(model)
        written = write_inputs(model, items, fmt, video_fmt=args.format, scale=args.scale, **options)
    else:
        fmt = args.format or default_format(model, open_layout(data_root))
        written = predict_split(model, data_root, args.split, args.out, fmt, scale=args.scale or 1.0, **options)
    videos = [path for path in written if is_video(path)]
    if len(written) > len(videos) or not videos:
        print(f"wrote {len(written) - len(videos)} {fmt} predictions to {args.out}")
    for out in videos:
        with VideoReader(out) as video:  # what was written, as a player will see it
            (h, w), info = video.info.size, video.info
        print(f"wrote {out}: {info.frames} frames of {h}x{w} at {info.fps:g} fps "
              f"({video_format(args.format, out)}); sound is not copied")
    return written


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx
    from .outputs import output_file

    check = dict(inputs=[args.checkpoint], overwrite=args.overwrite, option="--out")
    output_file(args.out, create=False, **check)  # refused before the work: a dataset, an input, an existing file
    report = export_onnx(args.checkpoint, args.out)
    print(report.line())
    size = Path(args.out).stat().st_size / 2**20
    print(f"wrote {args.out} ({size:.0f} MiB): input 'image', float32 (N, 3, H, W) of any N, H and W, normalised with "
          f"ImageNet's mean and std; output 'logits' (N, classes, H, W); class table and training frame size in "
          f"its metadata")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    train_from_args(args)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    predict_from_args(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every command."""
    from .config import PROFILES, default_profile_rule
    from .layouts import SPLITS

    parser = argparse.ArgumentParser(prog="python -m seg_utils",
                                     description="DeepLabV3-ResNet50 on Cityscapes: data, training, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic dataset: Cityscapes' official layout, or a plain folder")
    p.add_argument("out", type=Path, help="folder to write (created)")
    p.add_argument("--kind", choices=list(_SYNTH_DEFAULTS), default="cityscapes",
                   help="cityscapes (the official layout, 19 classes; the default) | sidewalk (a plain images/masks "
                        "folder with classes.json: a delivery robot's 6 classes, colour masks, some JPEG photos)")
    for split in SPLITS:
        counts = " / ".join(f"{kind} {d[split]}" for kind, d in _SYNTH_DEFAULTS.items())
        p.add_argument(f"--{split}", type=int, help=f"frames in the {split} split (default: {counts})")
    p.add_argument("--size", type=parse_size,
                   help="HxW of every frame (default: cityscapes 1024x2048 / sidewalk 240x320)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("check", help="validate a dataset folder and count its frames")
    p.add_argument("root", type=Path, help="dataset folder: Cityscapes (leftImg8bit/ and gtFine/) or a plain folder "
                                           "(images/, masks/ and classes.json)")
    p.add_argument("--classes", type=Path, help="class table of a plain folder (default: ROOT/classes.json)")
    p.add_argument("--quick", action="store_true", help="check names and pairs only, do not decode the files")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("evaluate", help="score a folder of prediction PNGs like the official server")
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--split", default="val", choices=SPLITS)
    p.add_argument("--predictions", type=Path, required=True,
                   help="folder of {city}_{seq}_{frame}*.png (Cityscapes) or <name>.png (a plain folder)")
    p.add_argument("--label-format", default="labelIds", choices=["labelIds", "trainIds"],
                   help="what Cityscapes predictions hold (a plain folder's: class indices or colours)")
    p.add_argument("--classes", type=Path, help="class table of a plain folder (default: DATA_ROOT/classes.json)")
    p.add_argument("--json", type=Path, help="also write the scores to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("train", help="train DeepLabV3-ResNet50 (also under torchrun for several GPUs)")
    p.set_defaults(func=_cmd_train)
    p.add_argument("--profile", choices=list(PROFILES),
                   help=f"sizes for every option not given (default: SEG_PROFILE, else by machine: "
                        f"{default_profile_rule()})")
    _add_config_options(p)
    p = sub.add_parser("predict", help="write predictions for a split, or for your own images and videos")
    p.set_defaults(func=_cmd_predict)
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path, help="a checkpoint written by train (best.pt, last.pt)")
    model.add_argument("--onnx", type=Path, help="a model written by export, run with ONNX Runtime on the CPU")
    p.add_argument("--data-root", type=Path)
    p.add_argument("--split", default="val", choices=SPLITS)
    p.add_argument("--images", type=Path, nargs="+",
                   help="image or video files, or folders of them, instead of a dataset split. Images: PNG, JPEG, "
                        "BMP, TIFF or WebP (converted to 8-bit RGB as OpenCV's IMREAD_COLOR does); one that does not "
                        "decode completely is named and skipped, the others predicted, and the command exits 1 at "
                        "the end. Videos: MP4, AVI, MOV, MKV or WebM, written as OUT/<stem>.mp4 with the same "
                        "frames and frame rate, the same size but for an odd side, one pixel shorter (OpenCV's "
                        "writer drops its last row or column), and no sound")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--format", choices=["labelIds", "trainIds", "index", "color", "overlay"],
                   help="labelIds (the official submission format; the default for a Cityscapes model) | trainIds | "
                        "index (class indices, as an index mask holds them; the default for other classes) | color "
                        "(the class table's colours) | overlay (the picture with the colours blended over it; the "
                        "default for a video, which takes color or overlay only)")
    p.add_argument("--legend", action="store_true", help="color and overlay: name the classes present in a corner")
    p.add_argument("--scale", type=_positive,
                   help="resize each picture by this factor before the model sees it, the prediction brought back to "
                        "its size (default for images and videos: the long side of the checkpoint's training frames, "
                        "times the middle (geometric mean) of its training rescaling range, over the picture's long "
                        "side; a dataset split as it is). --scale 1: as it is")
    p.add_argument("--slide", action="store_true", help="sliding-window prediction")
    p.add_argument("--crop", type=parse_size, default=(512, 1024), help="sliding window size (default 512x1024)")
    p.add_argument("--multi-scale", action="store_true", help="multi-scale + flip test-time augmentation")
    p.add_argument("--overwrite", action="store_true", help="replace prediction files that exist in --out")

    p = sub.add_parser("export", help="export a checkpoint to ONNX (any frame size), checked against PyTorch")
    p.set_defaults(func=_cmd_export)
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint written by train (best.pt)")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a factor above 0 such as 0.5 or 1 (1: as it is), got {text!r}")
    return value


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per TrainConfig field marked for the command line (``--field-name``, plus the field's short
    flags), with the field's own help; unset options are None (the profile's value)."""
    import dataclasses

    from .config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        if not f.metadata.get("cli", False):
            continue
        flags = list(dict.fromkeys([*f.metadata["flags"], "--" + f.name.replace("_", "-")]))
        help_text = f.metadata["help"]
        if "default" not in help_text and "required" not in help_text:
            help_text += f" (default: the profile's, else {f.default})"
        parse = f.metadata["parse"]
        kind = {"action": argparse.BooleanOptionalAction} if parse is bool else {"type": parse}  # bool: a switch
        parser.add_argument(*flags, dest=f.name, default=None, required=f.name == "out_dir", help=help_text, **kind)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    """A warning as the command line shows it: one line, like its errors (not Python's file, line and code)."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (warnings printed as one line each meanwhile)."""
    shown, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return _run(build_parser().parse_args(argv))
    finally:
        warnings.formatwarning = shown


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as err:  # DatasetError, OutputError, CheckpointError... are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # ours carry a message; the system's a file and a reason (a full disk, no permission)
        text = f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err)
        print(f"error: {text}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # TrainingInterrupted: the run was saved and its line printed
        if not hasattr(err, "exit_code"):
            print("interrupted", file=sys.stderr)
        return getattr(err, "exit_code", 130)
