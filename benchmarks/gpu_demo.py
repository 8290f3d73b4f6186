"""The GPU demo, as a reader with a CUDA GPU and no Cityscapes gets it: notebooks 03 and 04 run top to bottom in
their default profile (``demo-gpu`` there), each timed, then the val scores of the run they trained.

    python benchmarks/gpu_demo.py [--profile demo-gpu] [--notebooks 03 04]
    python benchmarks/gpu_demo.py --tiny      # notebook 04 in part, smoke profile: checks the script, CPU too

Runs in a temporary workspace (the synthetic demo set is written there first, as notebook 01 would). Needs
nbclient, nbformat and ipykernel. The last line is JSON: ``profile``, ``device``, seconds per notebook
(``notebook_s``; target for 03: <= 240 on an H100-class GPU), ``val_miou``, ``category_miou`` and the IoU of
``pole``, ``traffic light`` and ``traffic sign`` (targets 0.60, 0.78, 0.25 each) from the run's prediction PNGs
(``evaluation.evaluate_predictions``), ``tiny`` and the 1-minute load average.

``--tiny`` is ``--profile smoke --notebooks 04`` with two cuts: a 1-iteration run on 64x128 crops
(``engine.train`` into the run folder, where notebook 03 writes its run) stands in for notebook 03's, and notebook
04 runs only up to the cell that writes its prediction PNGs (the first that calls ``save_prediction``;
``notebook_cells`` says how many ran). That checks this script's own steps (the set-up, a notebook in a fresh
kernel that finds the run where notebook 03 leaves it, the run's history and the prediction PNGs where this script
looks for them, the scoring and the JSON); the notebooks themselves, whole, are run by the test suite (nbval). A
tiny run's scores and times say nothing about the GPU demo.
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


PREDICTIONS_CELL = "save_prediction("  # --tiny: notebook 04 stops after the first code cell that calls it


def run_notebook(path: Path, timeout: int, stop_after: str | None = None) -> tuple[float, str]:
    """Execute a notebook in a fresh kernel (its folder as working directory), top to bottom or up to the first code
    cell whose source holds ``stop_after``; return the seconds and how many cells ran ("<ran> of <all>")."""
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    total = len(notebook.cells)
    if stop_after is not None:
        last = next((i for i, cell in enumerate(notebook.cells)
                     if cell.cell_type == "code" and stop_after in cell.source), None)
        if last is None:
            raise SystemExit(f"{path}: no code cell holds {stop_after!r} (expected: the cell that writes the "
                             "prediction PNGs)")
        notebook.cells = notebook.cells[:last + 1]
    start = time.perf_counter()
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    return time.perf_counter() - start, f"{len(notebook.cells)} of {total}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="SEG_PROFILE for the kernels (default: the machine's)")
    parser.add_argument("--notebooks", nargs="+", default=None, choices=list(NOTEBOOKS),
                        help="default: 03 04 (with --tiny: 04)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke profile, a 1-iteration stand-in for notebook 03, notebook 04 in part")
    args = parser.parse_args(argv)
    if args.tiny:
        args.profile = "smoke"
    notebooks = args.notebooks or (["04"] if args.tiny else list(NOTEBOOKS))

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
        result: dict = {"profile": cfg.profile.name, "device": cfg.device, "tiny": args.tiny, "notebook_s": {},
                        "notebook_cells": {}}
        if args.tiny and "03" not in notebooks:
            from seg_utils.engine import train

            train(cfg.profile.config(data_root=cfg.data_root, out_dir=cfg.run_dir, iters=1, val_every=1,
                                     warmup_iters=0, crop_size=(64, 128), weights="none"), progress=False)
        for key in notebooks:
            seconds, cells = run_notebook(ROOT / "notebooks" / NOTEBOOKS[key], args.timeout,
                                          PREDICTIONS_CELL if args.tiny and key == "04" else None)
            result["notebook_s"][key] = round(seconds, 1)
            result["notebook_cells"][key] = cells
            print(f"notebook {key}: {seconds:.0f} s (cells: {cells})", flush=True)
        history = json.loads((cfg.run_dir / "history.json").read_text())
        result["val_miou_history"] = [round(x, 4) for x in history["val_miou"]]
        predictions = cfg.run_dir / "predictions" / "val"
        if predictions.is_dir():  # written by notebook 04
            scores = evaluate_predictions(cfg.data_root, "val", predictions)
            result.update(val_miou=round(scores["miou"], 4), category_miou=round(scores["category_miou"], 4),
                          class_iou={k: None if v is None else round(v, 3) for k, v in scores["class_iou"].items()})
            result.update({name: result["class_iou"][name] for name in ("pole", "traffic light", "traffic sign")})
    result["load_avg_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
