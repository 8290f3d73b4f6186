# Runs before any test or notebook is collected: every notebook kernel inherits this environment,
# so `pytest` always runs the series in the smoke profile on the synthetic set, whatever the shell says.
import os

os.environ["SEG_PROFILE"] = "smoke"
os.environ.pop("CITYSCAPES_DATASET", None)
os.environ.setdefault("MPLBACKEND", "Agg")
