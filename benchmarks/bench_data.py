"""Per-sample cost of the training data pipeline against decoding the two PNGs alone, and against its decoder and
colour jitter as they were at commit 820f754 (frozen copies, in the same run).

On full-size 1024x2048 synthetic frames, in one run and one thread (as in a DataLoader worker), every method in
turn in each of ``--repeats`` rounds (so that all see the same machine load), the median over rounds:
  decode    read_image + read_label (the floor: what any pipeline pays)
  pipeline  one training sample as the engine's loader makes it (``loaders.SeededCrops``): decode, check and
            map the labels, random scale 0.5-2.0 + crop 512x1024 (``cat_max_ratio`` 0.75) + flip (one
            warpAffine per array), photometric distortion, uint8 out (normalised later, on the device)
  previous  the same sample with the decoder and the colour jitter frozen as they were at commit 820f754
            (OpenCV's PNG decoder, then BGR -> RGB; one colour matrix, no hue) and today's ``TrainTransform``
            geometry; ``speedup_vs_previous``
  torchvision_v2  the same recipe written with torchvision.transforms.v2 (RandomResize, RandomCrop
            with label fill 255, flip, ColorJitter, Normalize) on the decoded arrays, for comparison
  photometric  mmsegmentation's PhotoMetricDistortion on a 512x1024 crop: ours (a 256-entry table per step,
            ``TrainTransform.photometric``) against the same definition in float32 arithmetic on every pixel
            (as mmsegmentation computes it); both give the same bytes (tests/test_transforms.py)
  rgb_decode  the RGB frame PNG alone, from its bytes in memory: libspng (``pyspng``, what ``images.read_image``
            uses) against OpenCV's decoder + BGR -> RGB (what 820f754 used); ``libspng_speedup_vs_opencv``
            (null without pyspng). On the synthetic frames (noise-textured renderings, 3.1 MB PNGs at
            1024x2048); real photos compress differently, so their ratio may differ
The last line is JSON with pipeline_over_decode (target <= 1.3) and speedup_vs_previous (target >= 1.3), the
1-minute load average (other processes share the cores: compare ratios within one run, not times across runs).

    python benchmarks/bench_data.py [--frames 4] [--repeats 9]
    python benchmarks/bench_data.py --tiny     # 2 frames of 128x256, 64x128 crops, 1 repeat: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
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


def _torchvision_pipeline(height: int, crop: tuple[int, int]):
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from seg_utils.transforms import IMAGENET_MEAN, IMAGENET_STD

    pipe = v2.Compose([
        v2.RandomResize(min_size=height // 2, max_size=2 * height),  # shorter side: scale 0.5..2.0 of the frame
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


def _previous_sample(sample, key, crop: tuple[int, int]):
    from seg_utils import TrainTransform
    from seg_utils.cityscapes import check_label_ids
    from seg_utils.labels import label_ids_to_train_ids

    image = cv2.cvtColor(cv2.imread(str(sample.image_path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    label_ids = cv2.imdecode(np.frombuffer(sample.label_path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    check_label_ids(label_ids, sample.label_path)
    target = label_ids_to_train_ids(label_ids)
    assert image.shape[:2] == target.shape
    # uint8 tensors out, as then with normalized=False (normalisation has since moved to the device for both)
    transform = TrainTransform(crop, (0.5, 2.0), rng=np.random.default_rng(list(key)), cat_max_ratio=0.75)
    transform.photometric = lambda img: _previous_photometric(transform, img)
    return transform(image, target)


def _rgb_decoders() -> dict:
    """Return the two RGB frame decoders compared, each from the file's bytes to an (H, W, 3) RGB array."""
    from seg_utils.images import pyspng

    def opencv(data: bytes) -> np.ndarray:
        return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)

    decoders = {"opencv": opencv}
    if pyspng is not None:
        decoders["libspng"] = pyspng.load
    return decoders


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--size", default="1024x2048", help="synthetic frame size HxW")
    parser.add_argument("--crop", default="512x1024", help="training crop HxW")
    parser.add_argument("--tiny", action="store_true", help="2 frames of 128x256, 64x128 crops, 1 repeat")
    args = parser.parse_args(argv)
    if args.tiny:
        args.frames, args.repeats, args.size, args.crop = 2, 1, "128x256", "64x128"
    height, width = (int(v) for v in args.size.split("x"))
    crop = tuple(int(v) for v in args.crop.split("x"))
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    from seg_utils import CityscapesDataset, TrainTransform
    from seg_utils.images import read_image, read_label
    from seg_utils.labels import label_ids_to_train_ids
    from seg_utils.loaders import SeededCrops
    from seg_utils.synthetic import write_synthetic_cityscapes

    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic_cityscapes(Path(tmp) / "cs", train=args.frames, val=0, test=0,
                                          size=(height, width), seed=0)
        ds = CityscapesDataset(root, "train")
        crops = SeededCrops(ds, crop, (0.5, 2.0), cat_max_ratio=0.75)
        items = [(i, (0, 0, i)) for i in range(len(ds))]  # (frame, augmentation key), as IterationSampler gives
        paths = [(s.image_path, s.label_path) for s in ds.samples]

        tv = _torchvision_pipeline(height, crop)
        patches = [read_image(p[0])[:crop[0], :crop[1]].copy() for p in paths] * 4  # 4 crops a frame
        jitter = TrainTransform(rng=np.random.default_rng(1))
        reference_rng = np.random.default_rng(1)
        frame_bytes = [p[0].read_bytes() for p in paths]
        decoders = _rgb_decoders()
        # Every method in turn in each round, so that all see the same machine load; the median over rounds.
        methods = {
            "decode": (lambda p: (read_image(p[0]), read_label(p[1])), paths),
            "pipeline": (crops.__getitem__, items),
            "previous": (lambda item: _previous_sample(ds.samples[item[0]], item[1], crop), items),
            "torchvision_v2": (lambda p: tv((read_image(p[0]), label_ids_to_train_ids(read_label(p[1])))), paths),
            "photometric": (jitter.photometric, patches),
            "photometric_float32": (lambda c: _photometric_float32(c, reference_rng), patches),
            **{f"rgb_{name}": (decode, frame_bytes) for name, decode in decoders.items()},
        }
        for fn, group in methods.values():
            fn(group[0])  # warm-up
        rounds: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, (fn, group) in methods.items():
                rounds[name].append(_median_ms(fn, group, 1))
        ms = {name: statistics.median(times) for name, times in rounds.items()}

    decode_ms, pipeline_ms, previous_ms, tv_ms = ms["decode"], ms["pipeline"], ms["previous"], ms["torchvision_v2"]
    photometric_ms, reference_ms = ms["photometric"], ms["photometric_float32"]
    rgb_ms = {name: ms[f"rgb_{name}"] for name in decoders}
    libspng_ms = rgb_ms.get("libspng")
    result = {
        "frame": f"{height}x{width}", "crop": f"{crop[0]}x{crop[1]}", "frames": args.frames, "repeats": args.repeats,
        "threads": 1, "tiny": args.tiny,
        "decode_ms": round(decode_ms, 2), "pipeline_ms": round(pipeline_ms, 2),
        "torchvision_v2_ms": round(tv_ms, 2),
        "previous_ms": round(previous_ms, 2), "speedup_vs_previous": round(previous_ms / pipeline_ms, 3),
        "pipeline_over_decode": round(pipeline_ms / decode_ms, 3),
        "torchvision_v2_over_decode": round(tv_ms / decode_ms, 3),
        "photometric_ms": round(photometric_ms, 2), "photometric_float32_ms": round(reference_ms, 2),
        "photometric_speedup": round(reference_ms / photometric_ms, 2),
        "rgb_decode_opencv_ms": round(rgb_ms["opencv"], 2),
        "rgb_decode_libspng_ms": None if libspng_ms is None else round(libspng_ms, 2),
        "libspng_speedup_vs_opencv": None if libspng_ms is None else round(rgb_ms["opencv"] / libspng_ms, 3),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    print(f"decode (2 PNGs)          {decode_ms:8.1f} ms/sample")
    print(f"seg_utils pipeline       {pipeline_ms:8.1f} ms/sample  ({pipeline_ms / decode_ms:.2f}x decode)")
    print(f"previous (820f754)       {previous_ms:8.1f} ms/sample  ({previous_ms / pipeline_ms:.2f}x the pipeline)")
    print(f"torchvision.v2 pipeline  {tv_ms:8.1f} ms/sample  ({tv_ms / decode_ms:.2f}x decode)")
    print(f"photometric, {crop[0]}x{crop[1]}    {photometric_ms:8.1f} ms/crop  "
          f"(float32 per pixel: {reference_ms:.1f} ms)")
    shown = "pyspng not installed" if libspng_ms is None else f"libspng {libspng_ms:.1f} ms"
    print(f"RGB frame PNG alone      {rgb_ms['opencv']:8.1f} ms with OpenCV, {shown}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
