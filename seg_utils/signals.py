"""Stopping a run politely: SIGTERM and SIGINT become a request that the training loop answers between steps.

Job schedulers (SLURM, Kubernetes), ``torchrun`` and spot machines stop a job with SIGTERM and a grace period;
a terminal's Ctrl-C and a notebook's interrupt button send SIGINT. While ``stop_requests()`` is active, the first
such signal only sets ``StopRequests.signum``: the loop finishes the step it is in, writes ``last.pt`` and
``history.json`` (atomically), and raises ``TrainingInterrupted``, which the command line turns into exit code
128 + the signal's number (143 for SIGTERM, 130 for SIGINT). A second signal raises at once, wherever the process
is: a checkpoint write it interrupts removes its temporary file, and the previous ``last.pt`` stays.

Data-loader workers ignore both signals (``ignore_stop_signals``, their ``worker_init_fn``): a signal sent to the
whole process group (a terminal's Ctrl-C, ``kill -- -PGID``) must not take away the batches of the step being
finished; the training process ends them when it stops.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["TrainingInterrupted", "StopRequests", "stop_requests", "ignore_stop_signals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal; the message says where the run was saved and how to resume it.

    A KeyboardInterrupt, so code that treats Ctrl-C as "stop" treats this the same; ``exit_code`` is the
    shell's convention for a process ended by that signal (128 + its number)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequests:
    """The signal received so far (``signum``, None while none came)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "no signal"

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # the second signal: stop now
            raise TrainingInterrupted(f"{signal.Signals(signum).name} again: stopped at once", signum)
        self.signum = signum


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequests]:
    """Turn SIGTERM and SIGINT into a ``StopRequests`` flag for the duration of the block, then restore the
    handlers there were. Outside the main thread (where Python cannot set handlers) nothing is caught."""
    requests = StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, requests._handle)
    try:
        yield requests
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A data-loader worker's ``worker_init_fn``: leave SIGTERM and SIGINT to the training process."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
