"""Inference speed on the CPU: PyTorch float32, PyTorch bfloat16 (where the CPU computes it natively) and ONNX
Runtime, on the same frames, in one run.

    python benchmarks/inference_speed.py                          # 512x1024 and 1024x2048, output stride 8
    python benchmarks/inference_speed.py --sizes 128x256 --frames 1 --output-stride 16   # a quick look
    python benchmarks/inference_speed.py --tiny      # 64x128, 1 frame, output stride 16: checks the script

DeepLabV3-ResNet50 with random weights (speed does not depend on them) is exported the way ``python -m seg_utils
export`` does it (``export.export_onnx``: checked against PyTorch first) and run through ``inference.predict_logits``
(whole frames, one at a time, uint8 in, class scores out) by both runtimes. Each variant predicts one frame to warm
up, then ``--frames`` frames, timed. Prints a table, then one JSON line: frames per second by size and runtime
(``fps``), each runtime's speed over PyTorch float32's (``ratios``, for example
``ratios["512x1024"]["onnxruntime_over_fp32"]``) and the 1-minute load average (other processes share the cores:
compare ratios within one run). ``--tiny`` checks the export on one frame of the tiny size instead of
``export.check_frames``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg_utils.device import cpu_cores, cpu_native_bf16  # noqa: E402
from seg_utils.export import export_onnx, load_onnx  # noqa: E402
from seg_utils.inference import predict_logits  # noqa: E402
from seg_utils.model import build_model  # noqa: E402
from seg_utils.synthetic.render import render_frame  # noqa: E402


def frames_per_second(model: torch.nn.Module, image: torch.Tensor, frames: int, bf16: bool = False) -> float:
    """Return frames/s of whole-frame prediction of ``image`` (1, 3, H, W) uint8, after one warm-up frame."""
    context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with context:
        predict_logits(model, image).argmax(1)
        start = time.perf_counter()
        for _ in range(frames):
            predict_logits(model, image).argmax(1)
    return frames / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512x1024,1024x2048", help="frame sizes HxW, comma-separated")
    parser.add_argument("--frames", type=int, default=2, help="timed frames per size and runtime")
    parser.add_argument("--output-stride", type=int, default=8, choices=(8, 16))
    parser.add_argument("--tiny", action="store_true", help="64x128, 1 frame, output stride 16")
    args = parser.parse_args(argv)
    if args.tiny:
        args.sizes, args.frames, args.output_stride = "64x128", 1, 16
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    torch.manual_seed(0)
    model = build_model(19, weights=None, aux_loss=False, output_stride=args.output_stride).eval()
    bf16 = cpu_native_bf16()
    summary: dict = {"cpu": platform.processor() or platform.machine(), "cores": cpu_cores(),
                     "torch": torch.__version__,
                     "output_stride": args.output_stride, "native_bf16": bf16, "frames": args.frames, "fps": {},
                     "ratios": {}}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, onnx_file = Path(tmp) / "model.pt", Path(tmp) / "model.onnx"
        torch.save({"model": model.state_dict(), "config": {"output_stride": args.output_stride}}, checkpoint)
        start = time.perf_counter()
        rng = np.random.default_rng(0)
        check = export_onnx(checkpoint, onnx_file, [render_frame(rng, sizes[0])[0]] if args.tiny else None)
        print(f"exported in {time.perf_counter() - start:.0f} s; {check.line()}", flush=True)
        import onnxruntime

        summary["onnxruntime"] = onnxruntime.__version__
        runtime = load_onnx(onnx_file)
        for h, w in sizes:
            image = torch.from_numpy(render_frame(rng, (h, w))[0].transpose(2, 0, 1).copy())[None]
            fps = {"pytorch_fp32": frames_per_second(model, image, args.frames)}
            fps["pytorch_bf16"] = frames_per_second(model, image, args.frames, bf16=True) if bf16 else None
            fps["onnxruntime"] = frames_per_second(runtime, image, args.frames)
            key = f"{h}x{w}"
            summary["fps"][key] = {k: v if v is None else round(v, 3) for k, v in fps.items()}
            summary["ratios"][key] = {f"{k}_over_fp32": None if v is None else round(v / fps["pytorch_fp32"], 2)
                                      for k, v in fps.items() if k != "pytorch_fp32"}
            shown = ", ".join(f"{k} {'n/a (no native bf16)' if v is None else f'{v:.3f}'}" for k, v in fps.items())
            print(f"{key}: frames/s {shown}", flush=True)
    summary.update(tiny=args.tiny, load_avg_1min=round(os.getloadavg()[0], 2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
