"""The demo's choices, run again side by side: val mIoU against iteration, kept as JSON for notebook 03 and
docs/demo-options.md.

    python benchmarks/demo_runs.py                    # every run below (about 15 minutes on 2 CPU cores)
    python benchmarks/demo_runs.py --runs H H-seed1   # some of them
    python benchmarks/demo_runs.py --tiny             # B for 1 iteration in the smoke profile: checks the script

Each run is notebook 03's demo as it was when these runs were made (profile ``demo``: the synthetic 256x512 set,
128x256 crops, batch 4, output stride 16, 250 iterations (the demo trains 650 now), warm-up 10, scales 0.5-1.0,
random weights, the machine's default precision) with one or more of the demo's four changes to the published
recipe undone, scored on the 12 val frames every 25 iterations:

* ``B``: the recipe's SGD (lr 0.01, momentum 0.9, weight decay 5e-4), no class weights, torchvision's init;
* ``F``: AdamW (lr 1e-3, weight decay 0.01) instead, the rest as B;
* ``G``: F with square-root inverse-frequency class weights;
* ``H``: G with every residual branch starting at zero (``zero_init_residual``): the demo profile itself;
* ``H-seed1``, ``H-seed2``: H with seeds 1 and 2 (weights, batch order, crops): the seed-to-seed spread that
  every other difference is to be read against.

"torchvision's init" is ``build_model(weights=None)`` with each bottleneck's last BatchNorm scale set back to 1,
torchvision's default. Writes ``seg_utils/results/demo_runs.json`` (shipped with the package, so notebook 03 can
plot it wherever it runs: ``notebook.demo_option_runs``; every run's history, its settings, machine
and time; runs already in the file are kept unless run again) and prints a JSON line per run, the summary last
(``--out`` writes another file instead).

``--tiny`` runs B (the run whose model this script makes itself, ``torchvision_init``; ``--runs`` picks others)
for 1 iteration, scored once, in the ``smoke`` profile (its set of 128x256 frames, written into a temporary
``SEG_WORKSPACE``), without ImageNet weights, and writes its JSON into that temporary folder unless ``--out`` says
where: it checks that the script runs and what it prints, and leaves the checkout and its ``demo_runs.json``
alone. ``seed_spread_points`` is null unless H and its two other seeds are in the file.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg_utils.device import precision_reason  # noqa: E402
from seg_utils.engine import train  # noqa: E402
from seg_utils.model import build_model  # noqa: E402
from seg_utils.notebook import setup  # noqa: E402
from seg_utils.rng import seed_everything  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "seg_utils" / "results" / "demo_runs.json"  # notebook 03 plots it
SGD = dict(optimizer="sgd", lr=0.01, weight_decay=5e-4)
RUNS = {  # name -> (TrainConfig overrides, zero_init_residual); "none", not None: from_profile skips None values
    "B": (dict(SGD, class_weights="none"), False),
    "F": (dict(class_weights="none"), False),
    "G": ({}, False),
    "H": ({}, True),
    "H-seed1": (dict(seed=1), True),
    "H-seed2": (dict(seed=2), True),
}


def torchvision_init(config) -> torch.nn.Module:
    """Return the demo's model with torchvision's default init: every bottleneck's last BatchNorm scale at 1."""
    seed_everything(config.seed)  # what train() does before it builds the model itself
    model = build_model(weights=None, output_stride=config.output_stride, aux_loss=config.aux_weight > 0)
    for module in model.backbone.modules():
        if hasattr(module, "bn3"):
            torch.nn.init.ones_(module.bn3.weight)
    return model


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=None,
                        help="default: all (with --tiny: B)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the JSON file to update (default: {RESULTS.relative_to(RESULTS.parents[2])}; "
                             "with --tiny, one in a temporary folder)")
    parser.add_argument("--tiny", action="store_true", help="1 iteration per run, smoke profile, temporary workspace")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            os.environ["SEG_WORKSPACE"] = str(Path(tmp) / "workspace")  # the smoke set and class counts go there
        runs = args.runs or (["B"] if args.tiny else list(RUNS))
        return run_all(runs, args.out or (Path(tmp) / "demo_runs.json" if args.tiny else RESULTS), args.tiny)


def run_all(runs: list[str], results_file: Path, tiny: bool = False) -> dict:
    """Train each run, update ``results_file`` after each, print a JSON line per run and the summary last."""
    cfg = setup("smoke" if tiny else "demo", seed=0)  # the profile's synthetic set (written once into the workspace)
    # 250 iterations: the comparison was made when the demo trained that long (it trains 650 now: these are
    # its first 250, on a schedule of their own), and the histories in demo_runs.json are of that length
    schedule = dict(iters=1, val_every=1, warmup_iters=0, weights="none") if tiny else dict(iters=250, val_every=25)
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for name in runs:
        overrides, zero_init = RUNS[name]
        with tempfile.TemporaryDirectory() as out:
            config = cfg.profile.config(data_root=cfg.data_root, out_dir=out, **schedule, **overrides)
            start = time.perf_counter()
            history = train(config, model=None if zero_init else torchvision_init(config), progress=False)
            seconds = time.perf_counter() - start
        results[name] = {"overrides": overrides, "zero_init_residual": zero_init, "seconds": round(seconds, 1),
                         "precision": precision_reason("cpu"), "machine": platform.processor() or platform.machine(),
                         "torch": torch.__version__,
                         **{k: history[k] for k in ("val_iter", "val_miou", "iter", "loss")}}
        results_file.parent.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps({"run": name, "seconds": round(seconds, 1),
                          "best_miou": round(100 * max(history["val_miou"]), 2),
                          "final_miou": round(100 * history["val_miou"][-1], 2)}), flush=True)
    seeds = [max(results[n]["val_miou"]) for n in ("H", "H-seed1", "H-seed2") if n in results]
    summary: dict = {"runs": {n: round(100 * max(r["val_miou"]), 2) for n, r in results.items()},
                     "seed_spread_points": round(100 * (max(seeds) - min(seeds)), 2) if len(seeds) == 3 else None}
    summary.update(profile=cfg.profile.name, out=str(results_file), tiny=tiny,
                   load_avg_1min=round(os.getloadavg()[0], 2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
