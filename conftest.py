# Runs before any test or notebook is collected: every notebook kernel inherits this environment, so `pytest`
# always runs the series in the smoke profile on the synthetic set, whatever the shell says, and writes its data
# and runs into a temporary workspace (removed at the end), never into the checkout's data/ and runs/.
import atexit
import os
import shutil
import tempfile

os.environ["SEG_PROFILE"] = "smoke"
os.environ.pop("CITYSCAPES_DATASET", None)
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["SEG_WORKSPACE"] = tempfile.mkdtemp(prefix="seg_utils_pytest_")
atexit.register(shutil.rmtree, os.environ["SEG_WORKSPACE"], ignore_errors=True)
