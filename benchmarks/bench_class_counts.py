"""What class weights cost at a run's start: counting every train label's pixels, against reading the cached counts.

    python benchmarks/bench_class_counts.py                 # 24 synthetic frames of 1024x2048, scaled to 2975
    python benchmarks/bench_class_counts.py --frames 8 --size 512x1024
    python benchmarks/bench_class_counts.py --tiny          # 2 frames of 64x128: checks the script

``sqrt_inv_freq`` class weights need the pixels of every class over the whole train split: every label PNG decoded
once (``stats.count_class_pixels``). ``stats.class_pixel_counts`` keeps the counts in the workspace, keyed by the
label files, so a resume or a second run reads them instead. This writes a synthetic set of ``--frames`` frames
in the official layout, times the count (seconds per frame, then scaled to Cityscapes' 2975 train frames: an
estimate, decoding being linear in the frames) and the cached read (stat of every label file + one JSON), in one
run. The JSON line (last) holds both, their ratio and the 1-minute load average (other processes share the cores:
compare ratios within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seg_utils.cityscapes import CityscapesDataset  # noqa: E402
from seg_utils.synthetic import write_synthetic_cityscapes  # noqa: E402

CITYSCAPES_TRAIN = 2975


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", default="1024x2048")
    parser.add_argument("--tiny", action="store_true", help="2 frames of 64x128")
    args = parser.parse_args(argv)
    if args.tiny:
        args.frames, args.size = 2, "64x128"
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SEG_WORKSPACE"] = str(Path(tmp) / "workspace")  # the cache goes there, not into the checkout
        from seg_utils import stats

        root = write_synthetic_cityscapes(Path(tmp) / "cs", train=args.frames, val=1, test=0, size=size, seed=0)
        train_set = CityscapesDataset(root, "train")
        start = time.perf_counter()
        counted = stats.class_pixel_counts(train_set)  # decodes every label, then writes the cache
        count_s = time.perf_counter() - start
        start = time.perf_counter()
        cached = stats.class_pixel_counts(CityscapesDataset(root, "train"))
        cached_s = time.perf_counter() - start
        assert (counted == cached).all()
    per_frame = count_s / args.frames
    summary = {"frames": args.frames, "size": list(size), "count_s": round(count_s, 2),
               "count_ms_per_frame": round(1000 * per_frame, 1),
               "estimated_count_s_2975_frames": round(per_frame * CITYSCAPES_TRAIN, 1),
               "cached_s": round(cached_s, 4), "count_over_cached": round(count_s / cached_s, 1), "tiny": args.tiny,
               "load_avg_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
