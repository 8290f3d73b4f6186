"""Per-sample cost of the training data pipeline against decoding the two PNGs alone, and against the pipeline
as it was before this script's last change (a frozen copy, in the same run).

On full-size 1024x2048 synthetic frames, in one run and one thread (as in a DataLoader worker):
  decode    read_image + read_label (the floor: what any pipeline pays)
  pipeline  one training sample as the engine's loader makes it (``loaders.SeededCrops``): decode, check and
            map the labels, random scale 0.5-2.0 + crop 512x1024 (``cat_max_ratio`` 0.75) + flip (one
            warpAffine per array), photometric distortion, uint8 out (normalised later, on the device)
  previous  the same sample by a frozen copy of the pipeline at commit 820f754: OpenCV's PNG decoder, then
            BGR -> RGB, and its photometric jitter (one colour matrix, no hue); ``speedup_vs_previous``
  torchvision_v2  the same recipe written with torchvision.transforms.v2 (RandomResize, RandomCrop
            with label fill 255, flip, ColorJitter, Normalize) on the decoded arrays, for comparison
  photometric  mmsegmentation's PhotoMetricDistortion on a 512x1024 crop: ours (a 256-entry table per step,
            ``TrainTransform.photometric``) against the same definition in float32 arithmetic on every pixel
            (as mmsegmentation computes it); both give the same bytes (tests/test_transforms.py)
The last line is JSON with pipeline_over_decode (target <= 1.3) and speedup_vs_previous (target >= 1.3).

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


# ---- the frozen copy (commit 820f754): decode with OpenCV, jitter with one colour matrix ----
_GRAY = np.array([0.299, 0.587, 0.114])


def _previous_photometric(transform, image: np.ndarray) -> np.ndarray:
    rng = transform.rng
    brightness = rng.uniform(-32, 32) if rng.random() < 0.5 else 0.0
    contrast = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else 1.0
    saturation = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else 1.0
    mix = saturation * np.eye(3) + (1 - saturation) * np.outer(np.ones(3), _GRAY)
    linear = contrast * mix
    matrix = np.hstack([linear, linear @ np.full((3, 1), brightness)]).astype(np.float32)
    return cv2.transform(image, matrix)


def _previous_sample(sample, key):
    from seg_utils import TrainTransform
    from seg_utils.data import check_label_ids
    from seg_utils.labels import label_ids_to_train_ids

    image = cv2.cvtColor(cv2.imread(str(sample.image_path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    label_ids = cv2.imdecode(np.frombuffer(sample.label_path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    check_label_ids(label_ids, sample.label_path)
    target = label_ids_to_train_ids(label_ids)
    assert image.shape[:2] == target.shape
    transform = TrainTransform((512, 1024), (0.5, 2.0), rng=np.random.default_rng(list(key)), cat_max_ratio=0.75,
                               normalized=False)
    transform.photometric = lambda img: _previous_photometric(transform, img)
    return transform(image, target)


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
    from seg_utils.loaders import SeededCrops
    from seg_utils.synthetic import write_synthetic_cityscapes

    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cityscapes(Path(tmp) / "cs", train=args.frames, val=0, test=0,
                                          size=(height, width), seed=0)
        ds = CityscapesDataset(root, "train")
        crops = SeededCrops(ds, (512, 1024), (0.5, 2.0), cat_max_ratio=0.75)
        items = [(i, (0, 0, i)) for i in range(len(ds))]  # (frame, augmentation key), as IterationSampler gives
        paths = [(s.image_path, s.label_path) for s in ds.samples]

        decode_ms = _median_ms(lambda p: (read_image(p[0]), read_label(p[1])), paths, args.repeats)
        # new and previous in turns, so that both see the same machine
        pipeline_ms, previous_ms = [], []
        for _ in range(args.repeats):
            pipeline_ms.append(_median_ms(crops.__getitem__, items, 1))
            previous_ms.append(_median_ms(lambda item: _previous_sample(ds.samples[item[0]], item[1]), items, 1))
        pipeline_ms, previous_ms = statistics.median(pipeline_ms), statistics.median(previous_ms)
        tv = _torchvision_pipeline()
        tv_ms = _median_ms(lambda p: tv((read_image(p[0]), label_ids_to_train_ids(read_label(p[1])))),
                           paths, args.repeats)
        patches = [read_image(p[0])[:512, :1024].copy() for p in paths]
        jitter = TrainTransform(rng=np.random.default_rng(1))
        reference_rng = np.random.default_rng(1)
        photometric_ms = _median_ms(jitter.photometric, patches, 4 * args.repeats)
        reference_ms = _median_ms(lambda c: _photometric_float32(c, reference_rng), patches, 4 * args.repeats)

    result = {
        "frame": f"{height}x{width}", "crop": "512x1024", "threads": 1,
        "decode_ms": round(decode_ms, 2), "pipeline_ms": round(pipeline_ms, 2),
        "torchvision_v2_ms": round(tv_ms, 2),
        "previous_ms": round(previous_ms, 2), "speedup_vs_previous": round(previous_ms / pipeline_ms, 3),
        "pipeline_over_decode": round(pipeline_ms / decode_ms, 3),
        "torchvision_v2_over_decode": round(tv_ms / decode_ms, 3),
        "photometric_ms": round(photometric_ms, 2), "photometric_float32_ms": round(reference_ms, 2),
        "photometric_speedup": round(reference_ms / photometric_ms, 2),
    }
    print(f"decode (2 PNGs)          {decode_ms:8.1f} ms/sample")
    print(f"seg_utils pipeline       {pipeline_ms:8.1f} ms/sample  ({pipeline_ms / decode_ms:.2f}x decode)")
    print(f"previous (820f754)       {previous_ms:8.1f} ms/sample  ({previous_ms / pipeline_ms:.2f}x the pipeline)")
    print(f"torchvision.v2 pipeline  {tv_ms:8.1f} ms/sample  ({tv_ms / decode_ms:.2f}x decode)")
    print(f"photometric, 512x1024    {photometric_ms:8.1f} ms/crop  (float32 per pixel: {reference_ms:.1f} ms)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
