"""The GPU demo, as a reader with a CUDA GPU and no Cityscapes gets it: notebooks 03 and 04 run top to bottom in
their default profile (``demo-gpu`` there), each timed, then the val scores of the run they trained.

    python benchmarks/gpu_demo.py [--profile demo-gpu] [--notebooks 03 04]

Runs in a temporary workspace (the synthetic demo set is written there first, as notebook 01 would). Needs
nbclient, nbformat and ipykernel. The last line is JSON: ``profile``, ``device``, seconds per notebook
(``notebook_s``; target for 03: <= 240 on an H100-class GPU), ``val_miou``, ``category_miou`` and the IoU of
``pole``, ``traffic light`` and ``traffic sign`` (targets 0.60, 0.78, 0.25 each) from the run's prediction PNGs
(``evaluation.evaluate_predictions``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOTEBOOKS = {"03": "03_training.ipynb", "04": "04_evaluation.ipynb"}


def run_notebook(path: Path, timeout: int) -> float:
    """Execute a notebook top to bottom in a fresh kernel (its folder as working directory); return seconds."""
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="SEG_PROFILE for the kernels (default: the machine's)")
    parser.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS), choices=list(NOTEBOOKS))
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SEG_WORKSPACE"] = tmp
        os.environ.pop("CITYSCAPES_DATASET", None)
        if args.profile:
            os.environ["SEG_PROFILE"] = args.profile
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        from seg_utils.evaluation import evaluate_predictions
        from seg_utils.notebook import setup

        cfg = setup()  # the profile and device the notebooks will pick; writes the synthetic set once
        print(cfg.describe(), flush=True)
        result: dict = {"profile": cfg.profile.name, "device": cfg.device, "notebook_s": {}}
        for key in args.notebooks:
            seconds = run_notebook(ROOT / "notebooks" / NOTEBOOKS[key], args.timeout)
            result["notebook_s"][key] = round(seconds, 1)
            print(f"notebook {key}: {seconds:.0f} s", flush=True)
        history = json.loads((cfg.run_dir / "history.json").read_text())
        result["val_miou_history"] = [round(x, 4) for x in history["val_miou"]]
        predictions = cfg.run_dir / "predictions" / "val"
        if predictions.is_dir():  # written by notebook 04
            scores = evaluate_predictions(cfg.data_root, "val", predictions)
            result.update(val_miou=round(scores["miou"], 4), category_miou=round(scores["category_miou"], 4),
                          class_iou={k: None if v is None else round(v, 3) for k, v in scores["class_iou"].items()})
            result.update({name: result["class_iou"][name] for name in ("pole", "traffic light", "traffic sign")})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
