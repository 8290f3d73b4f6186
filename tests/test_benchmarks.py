"""Every script in benchmarks/ runs in its tiny mode (``--tiny``: seconds to a minute on a CPU), as a subprocess in a
temporary folder, and its last stdout line is JSON holding the keys that docs/benchmarks.md and the other docs
quote. No timing is asserted: the figures of a tiny run mean nothing, only that the script still runs and prints
what a reader looks for. The scripts start two at a time when the module starts, the longest first; each test
waits for its own.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
DEMO_RUNS_JSON = ROOT / "seg_utils" / "results" / "demo_runs.json"  # demo_runs.py's full run writes it; tiny must not

# script -> (keys its last JSON line must hold, modules it needs beyond the package's own). Keys in dotted form
# ("fused_speedup.adamw") name a key inside a dict. Longest first: the pool starts them in this order.
SCRIPTS: dict[str, tuple[list[str], list[str]]] = {
    "gpu_demo.py": (["profile", "device", "notebook_s.04", "notebook_cells.04", "val_miou_history", "val_miou",
                     "category_miou", "class_iou", "pole", "traffic light", "traffic sign", "load_avg_1min"],
                    ["nbclient", "ipykernel"]),
    "gpu_check.py": (["device", "matmul_tflops", "train.img_per_s", "train.speedup_vs_fp32_baseline",
                      "peak_mem_gb_batch2", "peak_mem_gb_by_crops", "recommended_workers", "loader_img_per_s",
                      "engine_img_per_s", "inference_fps.whole", "inference_fps.slide", "inference_fps.ms_flip",
                      "video_fps", "miou_fp32", "miou_amp", "miou_amp_minus_fp32_points", "load_avg_1min"], []),
    "inference_speed.py": (["cores", "output_stride", "native_bf16", "fps.64x128.pytorch_fp32",
                            "fps.64x128.pytorch_bf16", "fps.64x128.onnxruntime",
                            "ratios.64x128.pytorch_bf16_over_fp32", "ratios.64x128.onnxruntime_over_fp32",
                            "onnxruntime", "load_avg_1min"], ["onnx", "onnxruntime", "onnxscript"]),
    "demo_runs.py": (["runs.B", "seed_spread_points", "profile", "out", "load_avg_1min"], []),
    "bench_train.py": (["device", "engine_settings", "img_per_s.fp32", "speedup_vs_fp32", "speedup_vs_fp32_baseline",
                        "optimizer_step_ms.adamw_fused", "fused_speedup.sgd", "fused_speedup.adamw", "peak_mem_mb",
                        "load_avg_1min"], []),
    "bench_metrics.py": (["speedup_vs_numpy_bincount", "speedup_vs_numpy_bincount_int64", "speedup_vs_previous",
                          "speedup_vs_previous_int64", "speedup_vs_sklearn", "speedup_vs_torchmetrics",
                          "ours_uint8_gb_per_s", "memcpy_uint8_gb_per_s", "evaluate_frames_per_s",
                          "decode_frames_per_s", "evaluate_over_decode", "load_avg_1min"],
                         ["sklearn", "torchmetrics"]),
    "bench_eval.py": (["device", "frames_per_s", "model_ms_per_frame", "metric_ms_per_frame", "metric_share",
                       "load_avg_1min"], []),
    "bench_data.py": (["decode_ms", "pipeline_ms", "previous_ms", "speedup_vs_previous", "pipeline_over_decode",
                       "torchvision_v2_over_decode", "photometric_speedup", "rgb_decode_opencv_ms",
                       "libspng_speedup_vs_opencv", "load_avg_1min"], []),
    "bench_class_counts.py": (["count_ms_per_frame", "estimated_count_s_2975_frames", "cached_s", "count_over_cached",
                               "load_avg_1min"], []),
}


def _missing(modules: list[str]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _lookup(summary: dict, dotted: str) -> bool:
    """Return whether ``summary`` holds the dotted key (``"ratios.64x128.onnxruntime_over_fp32"``)."""
    node = summary
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.fixture(scope="module")
def runs(module_tmp) -> Iterator[dict[str, Future]]:
    """Every script started with ``--tiny``, two at a time, each in its own temporary folder and workspace."""
    before = _digest(DEMO_RUNS_JSON)
    base = module_tmp("benchmarks")

    def run(script: str) -> dict:
        cwd = base / Path(script).stem
        cwd.mkdir()
        env = {**os.environ, "SEG_WORKSPACE": str(cwd / "workspace"), "MPLBACKEND": "Agg",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        env.pop("SEG_PROFILE", None)  # each script picks its own profile
        env.pop("CITYSCAPES_DATASET", None)
        done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--tiny"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=600)
        return {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "cwd": cwd}

    runnable = [s for s, (_, needs) in SCRIPTS.items() if not _missing(needs)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {script: pool.submit(run, script) for script in runnable}
        yield {"futures": futures, "demo_runs_json_before": before}


def test_every_benchmark_script_is_listed():
    assert sorted(SCRIPTS) == sorted(p.name for p in BENCHMARKS.glob("*.py"))


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_benchmark_tiny_mode_prints_its_keys(script, runs):
    keys, needs = SCRIPTS[script]
    if _missing(needs):
        pytest.skip(f"{script} needs {', '.join(_missing(needs))}")
    result = runs["futures"][script].result()
    tail = (result["stderr"] or result["stdout"])[-3000:]
    assert result["code"] == 0, f"{script} --tiny exited {result['code']}:\n{tail}"
    lines = result["stdout"].strip().splitlines()
    assert lines, f"{script} --tiny printed nothing:\n{tail}"
    summary = json.loads(lines[-1])
    missing = [key for key in keys if not _lookup(summary, key)]
    assert not missing, f"{script}: the last JSON line lacks {missing}: {lines[-1][:2000]}"
    assert summary.get("tiny") is True, f"{script}: the last JSON line does not say tiny: true"
    # Nothing lands in the working folder but the workspace, and nothing in the checkout: demo_runs.py's tiny
    # mode writes its JSON into a temporary folder.
    assert {p.name for p in result["cwd"].iterdir()} <= {"workspace"}, f"{script} wrote into its working folder"
    if script == "demo_runs.py":
        assert ROOT not in Path(summary["out"]).resolve().parents
        assert _digest(DEMO_RUNS_JSON) == runs["demo_runs_json_before"], "demo_runs.py --tiny changed demo_runs.json"
        assert set(summary["runs"]) == {"B"}
    if script == "gpu_demo.py":
        assert summary["profile"] == "smoke"
