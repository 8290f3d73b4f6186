"""ONNX export: a trained checkpoint as one ONNX file that takes frames of any height and width, checked with ONNX
Runtime against PyTorch before it is kept, and run by ONNX Runtime for ``predict --onnx``.

The graph takes normalised float32 images (N, 3, H, W) of any N, H and W, as the model does, and returns the class
logits (N, K, H, W): the file names those sizes (``batch``, ``height``, ``width``) and bounds none of them (the
``Dim`` ranges in ``export_onnx`` bound the tracing only; tested outside them). What a program needs to use it rides
along in the file's metadata: the class table (names, colours), the frame size and random rescaling the model was
trained with, and the normalisation (ImageNet mean and standard deviation): the model's record (``model_info``),
as its checkpoint holds it. The user's side of it:
docs/command-line.md, "Export to ONNX".
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .images import DatasetError
from .model_info import ModelInfo
from .outputs import atomic_write
from .transforms import image_tensor, normalize_batch

__all__ = ["MIN_AGREEMENT", "OnnxCheck", "check_frames", "export_onnx", "check_onnx", "load_onnx", "OnnxModel"]

MIN_AGREEMENT = 0.999  # the share of pixels whose class must agree between ONNX Runtime and PyTorch
OPSET = 18


class _Logits(torch.nn.Module):
    """The model as a graph with one output: the ``out`` logits (the auxiliary head is not exported)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)["out"]


@dataclass(frozen=True)
class OnnxCheck:
    """How an exported graph compares with PyTorch on ``frames`` frames (their sizes ``sizes``): the largest
    absolute logit difference, and the share of pixels whose predicted class is the same."""

    frames: int
    sizes: tuple[tuple[int, int], ...]
    max_logit_diff: float
    agreement: float

    def line(self) -> str:
        sizes = ", ".join(f"{h}x{w}" for h, w in dict.fromkeys(self.sizes))
        return (f"ONNX Runtime vs PyTorch on {self.frames} frames ({sizes}): largest logit difference "
                f"{self.max_logit_diff:.2e}, same class on {100 * self.agreement:.3f}% of pixels")


def check_frames(frame_size: tuple[int, int] | None, count: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Return synthetic street frames to check an export on: at the training frame size, and the last at 7/8 of its
    height and 5/8 of its width (rounded to odd numbers), so a size the graph was not traced at is checked too."""
    from .synthetic.render import render_frame

    h, w = frame_size or (256, 512)
    sizes = [(h, w)] * (count - 1) + [(int(h * 7 / 8) | 1, int(w * 5 / 8) | 1)]
    rng = np.random.default_rng(seed)
    return [render_frame(rng, size)[0] for size in sizes]


def _first_line(err: Exception, most: int = 200) -> str:
    """Return the first line of an error from ONNX Runtime or the exporter (their messages run to many lines)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:most]


def _run_session(session, images: torch.Tensor, path: str | Path = "the ONNX model") -> np.ndarray:
    try:
        return session.run(None, {session.get_inputs()[0].name: images.contiguous().numpy()})[0]
    except Exception as err:  # onnxruntime's own error classes: e.g. a graph exported elsewhere with a fixed size
        raise RuntimeError(f"{path}: ONNX Runtime failed on a {tuple(images.shape)} input ({_first_line(err)})") \
            from None


def check_onnx(model: torch.nn.Module, path: str | Path, frames: list[np.ndarray]) -> OnnxCheck:
    """Compare an ONNX file run by ONNX Runtime (CPU) with the PyTorch ``model`` (CPU, float32) on RGB uint8
    ``frames``, one at a time."""
    session = _session(path)
    worst, same, total = 0.0, 0, 0
    for frame in frames:
        images = normalize_batch(image_tensor(frame)[None])
        with torch.no_grad():
            expected = model(images)["out"].float().numpy()
        got = _run_session(session, images, path)
        worst = max(worst, float(np.abs(got - expected).max()))
        same += int((got.argmax(1) == expected.argmax(1)).sum())
        total += expected.shape[0] * expected.shape[2] * expected.shape[3]
    return OnnxCheck(len(frames), tuple(f.shape[:2] for f in frames), worst, same / total)


def export_onnx(checkpoint: str | Path, out: str | Path, frames: list[np.ndarray] | None = None
                ) -> OnnxCheck:
    """Export a checkpoint's model to ``out`` (one ONNX file, dynamic batch, height and width), check it with ONNX
    Runtime against PyTorch on ``frames`` (default: ``check_frames`` at the checkpoint's training frame size), and keep
    it only if at least ``MIN_AGREEMENT`` of their pixels get the same class (else RuntimeError, and nothing written).
    Return the check. The caller checks where ``out`` may be written (``outputs.output_file``)."""
    from torch.export import Dim

    from .inference import load_model
    from .outputs import refuse_dataset

    _need_onnx()
    import onnx

    out = Path(out)
    refuse_dataset(out.parent)
    model = load_model(checkpoint, "cpu").float()
    frames = frames if frames is not None else check_frames(model.info.frame_size)
    # traced on 2 frames: a batch of 1 would be fixed at 1 (torch.export specialises sizes 0 and 1). The Dim bounds
    # are the range torch.export checks its trace for; the ONNX file keeps the names of these sizes, not the bounds.
    example = normalize_batch(torch.zeros((2, 3, *frames[0].shape[:2]), dtype=torch.uint8))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals are not the reader's business
            program = torch.onnx.export(_Logits(model).eval(), (example,), input_names=["image"],
                                        output_names=["logits"], dynamo=True, opset_version=OPSET, verbose=False,
                                        dynamic_shapes={"image": {0: Dim("batch", min=1, max=64),
                                                                  2: Dim("height", min=16, max=8192),
                                                                  3: Dim("width", min=16, max=8192)}})
        proto = program.model_proto
        onnx.checker.check_model(proto)
    except Exception as err:  # the exporter's and the checker's own error classes
        raise RuntimeError(f"{checkpoint}: ONNX export failed ({type(err).__name__}: {_first_line(err)})") from None
    meta = {"info": json.dumps(model.info.to_dict()), "checkpoint": Path(checkpoint).name,
            "input": "RGB float32 (N, 3, H, W), (x / 255 - mean) / std, with the mean and std of 'info'"}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    with tempfile.TemporaryDirectory(prefix="seg_utils_export_") as tmp:  # checked there, not in the user's folder
        checking = Path(tmp) / out.name
        checking.write_bytes(data)
        report = check_onnx(model, checking, frames)
    if report.agreement < MIN_AGREEMENT:
        raise RuntimeError(f"{out}: not written: {report.line()}, below {100 * MIN_AGREEMENT:.1f}%")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: f.write(data))
    return report


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise RuntimeError(f"ONNX export needs {err.name}: pip install -e '.[onnx]' (dev includes it)") from None


def _session(path: str | Path):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own error classes: a file that is no ONNX graph, or a damaged one
        raise DatasetError(f"{path}: not an ONNX model ONNX Runtime can load ({_first_line(err, 160)})") from None


class OnnxModel(torch.nn.Module):
    """An exported ONNX file run by ONNX Runtime on the CPU, used where ``inference`` and ``predictions`` take a
    model: called on normalised images it returns ``{"out": logits}``; what it is (``info``: class table, training
    frames, normalisation) is the record in its metadata. It has no torch weights (``device.model_device``: the
    CPU)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{path}: no such ONNX file")
        self.session = _session(path)
        meta = self.session.get_modelmeta().custom_metadata_map
        if "info" not in meta:
            raise DatasetError(f"{path}: no model record in its metadata (expected a file written by "
                               f"python -m seg_utils export)")
        try:
            self.info = ModelInfo.from_dict(json.loads(meta["info"]), path)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}: damaged metadata (not JSON: {err.msg})") from None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = _run_session(self.session, images.float().cpu(), self.path)
        return {"out": torch.from_numpy(logits).to(images.device)}


def load_onnx(path: str | Path) -> OnnxModel:
    """Return an exported ONNX file as a model ``inference.predict`` and ``predictions.predict_split`` take (ONNX
    Runtime, CPU)."""
    _need_onnx()
    return OnnxModel(path).eval()
