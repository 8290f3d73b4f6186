"""What the first cell of every notebook does: ``setup()`` picks the profile, the device and the dataset (the real
one named by ``CITYSCAPES_DATASET``, else the synthetic set of the profile's size, written once into the
workspace), seeds everything, and says where runs go.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .cityscapes import require_dataset
from .config import Profile, get_profile, profile_reason
from .device import precision_reason
from .env import cityscapes_root, workspace
from .rng import seed_everything
from .synthetic import ensure_synthetic, ensure_synthetic_folder

__all__ = ["Setup", "setup", "seed_everything", "demo_option_runs", "SIDEWALK_SETS", "sidewalk_set"]

#: Notebook 05's stand-in for your own data, by profile (others: demo's): frames per split and (H, W).
SIDEWALK_SETS = {"smoke": dict(train=4, val=2, test=1, size=(96, 128)),
                 "demo": dict(train=24, val=8, test=4, size=(240, 320))}


@dataclass(frozen=True)
class Setup:
    """What the first cell of every notebook needs: profile, device, dataset and where runs go."""

    profile: Profile
    device: str
    data_root: Path
    synthetic: bool
    run_dir: Path
    reason: str = ""  # why this profile: named, SEG_PROFILE, or the default for this machine

    def describe(self) -> str:
        """Return a one-line account of the choices made and why (no machine paths)."""
        p = self.profile
        if self.synthetic:
            data = f"synthetic Cityscapes-format set, {p.synth_size[0]}x{p.synth_size[1]} frames"
        else:
            data = "real Cityscapes (CITYSCAPES_DATASET)"
        why = f" ({self.reason})" if self.reason else ""
        return (f"profile: {p.name}{why} | device: {self.device}, {precision_reason(self.device)} | "
                f"data: {data}")


def setup(profile: str | None = None, seed: int = 0) -> Setup:
    """Return the notebook set-up: pick the profile, the device and the dataset, and seed everything.

    With ``CITYSCAPES_DATASET`` set, the real dataset is used (DatasetError, saying what is missing, when the
    folder does not hold its train and val folders). Otherwise the synthetic set of the profile's size is written
    once into ``workspace()/data`` and reused by every later call.
    """
    prof = get_profile(profile)
    seed_everything(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    real = cityscapes_root()
    if real is not None:
        data_root, synthetic = require_dataset(real, "CITYSCAPES_DATASET folder"), False
    elif prof.name == "full":
        raise ValueError("the full profile trains the published recipe on real Cityscapes: set CITYSCAPES_DATASET "
                         "to the dataset folder, or use SEG_PROFILE=demo for the synthetic set")
    else:
        data_root = ensure_synthetic(
            workspace() / "data" / f"synthetic-{prof.data}",
            train=prof.synth_train, val=prof.synth_val, test=prof.synth_test, size=prof.synth_size, seed=seed,
        )
        synthetic = True
    run_dir = workspace() / "runs" / prof.name
    return Setup(profile=prof, device=device, data_root=data_root, synthetic=synthetic, run_dir=run_dir,
                 reason=profile_reason(profile))


def demo_option_runs() -> dict:
    """Return the histories of ``benchmarks/demo_runs.py`` (the demo's choices undone one at a time, and three
    seeds of the demo), as that script stored them in the package: run name -> its settings and history."""
    import json
    from importlib.resources import files

    return json.loads(files("seg_utils").joinpath("results", "demo_runs.json").read_text())


def sidewalk_set(profile: Profile, seed: int = 0) -> Path:
    """Return the folder of notebook 05's stand-in for your own data (``synthetic.sidewalk``: a delivery robot's
    6 classes in the plain images/masks layout) at the profile's size, written once into ``workspace()/data``."""
    name = profile.name if profile.name in SIDEWALK_SETS else "demo"
    return ensure_synthetic_folder(workspace() / "data" / f"sidewalk-{name}", seed=seed, **SIDEWALK_SETS[name])
