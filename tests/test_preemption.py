"""Training that survives what stops jobs: SIGTERM and SIGINT (a scheduler, torchrun, a spot machine, Ctrl-C), and
a full disk. Real processes, real signals; the resumed run must compute the very losses of an uninterrupted one.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seg_utils import outputs
from seg_utils.checkpoint import load_checkpoint, save_checkpoint
from seg_utils.config import TrainConfig
from seg_utils.engine import train
from seg_utils.outputs import OutputError

# 12 iterations of the smoke recipe on 48x96 crops, a checkpoint every 4: a few seconds on 2 cores.
OPTIONS = dict(iters=12, crop_size=(48, 96), batch_size=2, warmup_iters=1, val_every=4, output_stride=16,
               weights="none", seed=0)
ARGS = ["--profile", "smoke", "--iters", "12", "--crop", "48x96", "--batch", "2", "--warmup-iters", "1",
        "--val-every", "4", "--output-stride", "16", "--weights", "none", "--seed", "0"]

# The command line, with torch.save slowed down after it has written save number N: the test signals it then.
_SLOW_SAVE = """
import sys, time, pathlib, torch
marker, slow_at, argv = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
real_save, calls = torch.save, []
def save(obj, f, *args, **kwargs):
    real_save(obj, f, *args, **kwargs)
    if "model" in obj:
        calls.append(1)
        if len(calls) == slow_at:
            marker.touch()  # the checkpoint's bytes are in the temporary file, not yet renamed into place
            time.sleep(3)
torch.save = save
from seg_utils.cli import main
sys.exit(main(argv))
"""


@pytest.fixture(scope="module")
def straight(synthetic_root, module_tmp) -> dict:
    """The uninterrupted run's history."""
    out = module_tmp("straight")
    train(TrainConfig.from_profile("smoke", data_root=synthetic_root, out_dir=out, num_workers=0, **OPTIONS),
          progress=False)
    return json.loads((out / "history.json").read_text())


def _command(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--data-root", str(root), "--out", str(out), *ARGS, *extra]


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _temporaries(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def _resume_and_compare(root: Path, out: Path, straight: dict) -> None:
    done = subprocess.run([sys.executable, "-m", "seg_utils", "train", *_command(root, out, "--workers", "0",
                                                                                "--resume")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = json.loads((out / "history.json").read_text())
    for key in ("iter", "loss", "lr", "val_iter", "val_miou", "val_pixel_acc"):
        assert resumed[key] == straight[key], key


def test_sigterm_mid_training_saves_the_step_and_resume_is_exact(synthetic_root, straight, tmp_path):
    # Sent to the whole process group, as a scheduler does: the data-loader worker must leave it to the trainer.
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "seg_utils", "train", *_command(synthetic_root, out,
                                                                                      "--workers", "1")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for(out / "history.json", process)  # the checkpoint of iteration 4 is written: training goes on
    os.killpg(process.pid, signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    found = re.search(r"stopped by SIGTERM after iteration (\d+)/12: .*last\.pt and history\.json hold it; "
                      r"continue with the same command and --resume", stdout)
    assert found, stdout + stderr
    stopped = int(found[1])
    assert 4 <= stopped < 12 and load_checkpoint(out / "last.pt")["iteration"] == stopped
    assert json.loads((out / "history.json").read_text())["iter"][-1] == stopped
    assert "Traceback" not in stderr and not _temporaries(out)
    _resume_and_compare(synthetic_root, out, straight)


@pytest.mark.parametrize("save, signals", [(1, 1), (2, 2)], ids=["first-write-one-signal", "second-write-two"])
def test_a_signal_during_a_checkpoint_write_leaves_no_temporary_file(synthetic_root, straight, tmp_path, save,
                                                                     signals):
    out, marker = tmp_path / "run", tmp_path / "writing"
    process = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(marker), str(save),
                                "train", *_command(synthetic_root, out, "--workers", "0")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(marker, process)
    for _ in range(signals):
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert not _temporaries(out) and "Traceback" not in stderr
    if signals == 1:  # the write finishes, then the run stops there: iteration 4, with its history
        assert load_checkpoint(out / "last.pt")["iteration"] == 4
        assert json.loads((out / "history.json").read_text())["val_iter"] == [4]
        _resume_and_compare(synthetic_root, out, straight)
    else:  # the second signal stops the write at once: the previous last.pt (iteration 4) is kept
        assert load_checkpoint(out / "last.pt")["iteration"] == 4


class _FillsUp:
    """A file that takes ``room`` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        if self.room < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_names_the_space_left_and_needed(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(10)}})
    before = path.read_bytes()
    monkeypatch.setattr(outputs, "open", lambda p, mode: _FillsUp(open(p, mode), 10_000), raising=False)
    with pytest.raises(OutputError) as err:
        save_checkpoint(path, {"model": {"w": torch.zeros(250_000)}})  # 1 MB of weights, 10 kB of room
    message = str(err.value)
    # torch's own words would be "[enforce fail at inline_container.cc] . unexpected pos ...": not ours
    assert re.fullmatch(rf"{re.escape(str(path))}: writing failed: no space left on the device \(\d+\.\d [KMG]B "
                        rf"free in {re.escape(str(tmp_path))}, and a last\.pt needs about 1\.0 MB\); the previous "
                        rf"last\.pt is kept; free some space \(or choose another folder\) and resume", message), message
    assert "\n" not in message and path.read_bytes() == before and not _temporaries(tmp_path)
