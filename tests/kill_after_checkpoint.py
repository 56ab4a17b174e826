"""`python tests/kill_after_checkpoint.py EPOCH [overrides]`: the lambdaopt command, SIGKILLed right after
the checkpoint of epoch EPOCH is written — the crash tests/test_resume.py resumes from. A wrapper, so the
training loop carries no test hook."""
import os
import signal
import sys

from lambdaopt import checkpoint
from lambdaopt.cli import main

EPOCH = int(sys.argv.pop(1))
_save = checkpoint.Checkpointer.save


def save_then_die(self, state: dict) -> None:
    _save(self, state)
    if state["trainer"]["epoch"] == EPOCH and state["trainer"]["step_in_epoch"] == 0:
        os.kill(os.getpid(), signal.SIGKILL)


checkpoint.Checkpointer.save = save_then_die
main()
