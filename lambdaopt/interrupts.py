"""Ctrl-C and SIGTERM during training: finish the current step, checkpoint, end the run KILLED.

`StopRequest` turns the first SIGINT/SIGTERM into a flag that the training loop reads after every
step; the loop then writes a checkpoint and raises `TrainingInterrupted`, which `tracked_run` turns
into an MLflow run with status KILLED (it is a KeyboardInterrupt) and the entry point into one line
and exit status 128 + signal number. A second signal interrupts at once (plain KeyboardInterrupt).
"""
from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint; `exit_code` is 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequest:
    """Context manager: while inside, SIGINT/SIGTERM set `signum` instead of stopping the process.

    Handlers can only be installed from the main thread; elsewhere (a launcher running jobs in
    threads) this does nothing and signals keep their previous behaviour."""

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:  # asked twice: stop now, without a checkpoint
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""
