"""Per-sample cost of the training data pipeline against decoding the two PNGs alone.

On full-size 1024x2048 synthetic frames, in one run and one thread (as in a DataLoader worker):
  decode    read_image + read_label (the floor: what any pipeline pays)
  pipeline  CityscapesDataset(..., TrainTransform(512x1024)): decode, labelId->trainId lookup,
            random scale 0.5-2.0 + crop + flip (one warpAffine per array), jitter, normalise
  torchvision_v2  the same recipe written with torchvision.transforms.v2 (RandomResize, RandomCrop
            with label fill 255, flip, ColorJitter, Normalize) on the decoded arrays, for comparison
  photometric  mmsegmentation's PhotoMetricDistortion on a 512x1024 crop: ours (a 256-entry table per step,
            ``TrainTransform.photometric``) against the same definition in float32 arithmetic on every pixel
            (as mmsegmentation computes it); both give the same bytes (tests/test_transforms.py)
The last line is JSON with pipeline_over_decode (target <= 1.3).

    python benchmarks/bench_data.py [--frames 4] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch


def _median_ms(fn, items, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        for item in items:
            start = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _torchvision_pipeline(crop=(512, 1024)):
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from seg_utils.transforms import IMAGENET_MEAN, IMAGENET_STD

    pipe = v2.Compose([
        v2.RandomResize(min_size=512, max_size=2048),  # shorter side 512..2048 = scale 0.5..2.0 of 1024
        v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255}),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.125, contrast=0.5, saturation=0.5, hue=0.1),  # hue: 18 of 180
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])

    def run(arrays):
        image, target = arrays
        return pipe(tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
                    tv_tensors.Mask(torch.from_numpy(target)))

    return run


def _photometric_float32(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PhotoMetricDistortion computed as mmsegmentation writes it: float32 arithmetic on every pixel."""

    def convert(img, alpha=1.0, beta=0.0):
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def contrast(img):
        return convert(img, alpha=rng.uniform(0.5, 1.5)) if rng.integers(2) else img

    img = convert(image, beta=rng.uniform(-32, 32)) if rng.integers(2) else image
    mode = rng.integers(2)
    if mode == 1:
        img = contrast(img)
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=rng.uniform(0.5, 1.5))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + rng.integers(-18, 18)) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if mode == 0:
        img = contrast(img)
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", default="1024x2048")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    from seg_utils import CityscapesDataset, TrainTransform
    from seg_utils.data import read_image, read_label
    from seg_utils.labels import label_ids_to_train_ids
    from seg_utils.synthetic import write_synthetic_cityscapes

    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cityscapes(Path(tmp) / "cs", train=args.frames, val=0, test=0,
                                          size=(height, width), seed=0)
        ds = CityscapesDataset(root, "train", transforms=TrainTransform(crop_size=(512, 1024),
                                                                         rng=np.random.default_rng(0)))
        indices = list(range(len(ds)))
        paths = [(s.image_path, s.label_path) for s in ds.samples]

        decode_ms = _median_ms(lambda p: (read_image(p[0]), read_label(p[1])), paths, args.repeats)
        pipeline_ms = _median_ms(lambda i: ds[i], indices, args.repeats)
        tv = _torchvision_pipeline()
        tv_ms = _median_ms(lambda p: tv((read_image(p[0]), label_ids_to_train_ids(read_label(p[1])))),
                           paths, args.repeats)
        crops = [read_image(p[0])[:512, :1024].copy() for p in paths]
        jitter = TrainTransform(rng=np.random.default_rng(1))
        reference_rng = np.random.default_rng(1)
        photometric_ms = _median_ms(jitter.photometric, crops, 4 * args.repeats)
        reference_ms = _median_ms(lambda c: _photometric_float32(c, reference_rng), crops, 4 * args.repeats)

    result = {
        "frame": f"{height}x{width}", "crop": "512x1024", "threads": 1,
        "decode_ms": round(decode_ms, 2), "pipeline_ms": round(pipeline_ms, 2),
        "torchvision_v2_ms": round(tv_ms, 2),
        "pipeline_over_decode": round(pipeline_ms / decode_ms, 3),
        "torchvision_v2_over_decode": round(tv_ms / decode_ms, 3),
        "photometric_ms": round(photometric_ms, 2), "photometric_float32_ms": round(reference_ms, 2),
        "photometric_speedup": round(reference_ms / photometric_ms, 2),
    }
    print(f"decode (2 PNGs)          {decode_ms:8.1f} ms/sample")
    print(f"seg_utils pipeline       {pipeline_ms:8.1f} ms/sample  ({pipeline_ms / decode_ms:.2f}x decode)")
    print(f"torchvision.v2 pipeline  {tv_ms:8.1f} ms/sample  ({tv_ms / decode_ms:.2f}x decode)")
    print(f"photometric, 512x1024    {photometric_ms:8.1f} ms/crop  (float32 per pixel: {reference_ms:.1f} ms)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
