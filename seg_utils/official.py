"""A bridge to the official ``cityscapesscripts`` pixel-level evaluator, for cross-checking our metrics.

``official_evaluate`` runs ``evalPixelLevelSemanticLabeling.evaluateImgLists`` unchanged, but safely:

* its module reads ``CITYSCAPES_DATASET`` / ``CITYSCAPES_RESULTS`` at import time: we fill a private copy
  of its ``args`` object explicitly, so no environment variable matters;
* it writes a JSON file into the dataset folder by default: JSON output is off and the export path points
  into a temporary folder;
* its errors print and call ``sys.exit``: they become ``OfficialEvaluationError``;
* its progress and tables are printed: stdout is captured;
* it calls ``np.in1d``, removed in numpy 2.4: see ``_NumpyCompat``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .cityscapes import LABEL_DIR, LABEL_SUFFIX, CityscapesLayout, require_labels
from .images import DatasetError

__all__ = ["OfficialEvaluationError", "official_evaluate"]


class OfficialEvaluationError(RuntimeError):
    """The official evaluator refused the inputs or crashed; the message carries its own error line."""


class _NumpyCompat(types.ModuleType):
    """numpy, plus ``in1d``: numpy 2.4 removed ``np.in1d`` (deprecated since 2.0 in favour of ``np.isin``)
    and the official evaluator still calls it for instance-level scores (an upstream fix is pending).
    Installed as the evaluator module's own ``np`` only while it runs, so numpy itself is never patched.
    """

    def __init__(self) -> None:
        super().__init__("numpy")

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def in1d(ar1: Any, ar2: Any, assume_unique: bool = False, invert: bool = False) -> np.ndarray:
        # in1d always returned a flat array; isin keeps ar1's shape.
        return np.isin(np.ravel(ar1), ar2, assume_unique=assume_unique, invert=invert)


@contextlib.contextmanager
def _numpy_shim(module: types.ModuleType) -> Iterator[None]:
    saved = module.np
    module.np = _NumpyCompat()
    try:
        yield
    finally:
        module.np = saved


def _import_evaluator() -> types.ModuleType:
    try:
        from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as module
    except ValueError as exc:  # raised at import when CITYSCAPES_EXPORT_DIR is not a folder
        raise OfficialEvaluationError(f"cannot import the official evaluator: {exc}") from exc
    return module


def official_evaluate(data_root: str | Path, split: str, predictions_dir: str | Path,
                      instance_scores: bool | None = None) -> dict[str, Any]:
    """Return the official evaluator's result dict for labelIds prediction PNGs of a split.

    Keys as the official script writes them: ``classScores`` ({name: IoU} for all 34 labels, NaN for
    the non-evaluated ones), ``averageScoreClasses`` (the mIoU), ``categoryScores``,
    ``averageScoreCategories``, ``classInstScores`` / ``averageScoreInstClasses`` (iIoU, NaN unless
    instance scores ran), ``confMatrix`` (34x34 labelId counts) and ``priors``. Instance-level scores run
    when ``instance_scores`` is True, or (None) when every frame has its ``_gtFine_instanceIds.png``.
    Nothing is written anywhere.
    """
    require_labels(split, OfficialEvaluationError)
    root, predictions_dir = Path(data_root).resolve(), Path(predictions_dir).resolve()
    try:
        samples = CityscapesLayout(root).samples(split, with_images=False)
    except DatasetError as err:
        raise OfficialEvaluationError(f"no ground truth found: {err}") from None
    gt_files = [str(s.label_path) for s in samples]
    search = os.path.join(str(root), LABEL_DIR, split, "*", "*" + LABEL_SUFFIX)  # what the script would glob
    if not predictions_dir.is_dir():
        raise OfficialEvaluationError(f"{predictions_dir}: no such prediction folder")
    if instance_scores is None:
        instance_scores = all(s.instance_path is not None for s in samples)

    module = _import_evaluator()
    args = copy.copy(module.args)  # a private copy: the module's global stays as imported
    args.cityscapesPath = str(root)
    args.groundTruthSearch = search
    args.predictionPath = str(predictions_dir)
    args.predictionWalk = None
    args.evalInstLevelScore = bool(instance_scores)
    args.evalPixelAccuracy = False
    args.evalLabels = []
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ""
    args.JSONOutput = False
    out = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="cs_official_") as tmp, _numpy_shim(module), \
            contextlib.redirect_stdout(out):
        # JSON output is off; should a version ignore that flag, the file still lands outside the dataset.
        args.exportFile = os.path.join(tmp, "resultPixelLevelSemanticLabeling.json")
        try:
            predictions = [module.getPrediction(args, gt) for gt in gt_files]
            result = module.evaluateImgLists(predictions, gt_files, args)
        except SystemExit as exc:
            errors = [line for line in out.getvalue().splitlines() if line.startswith("ERROR")]
            raise OfficialEvaluationError(f"official evaluator: {errors[-1] if errors else exc}") from None
        except (IndexError, KeyError) as exc:
            # e.g. a prediction id above 33 (or 255) indexes past its 34x34 matrix
            raise OfficialEvaluationError(f"official evaluator crashed ({type(exc).__name__}: {exc}); "
                                          "predictions must be labelIds 0..33") from exc
    result["numFrames"] = len(gt_files)
    return result
