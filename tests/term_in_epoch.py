"""`python tests/term_in_epoch.py EPOCH STEP [overrides]`: the lambdaopt command, sent SIGTERM by itself just
before step STEP (0-based) of epoch EPOCH — a signal that lands inside an epoch whatever the machine's
speed, for tests/test_resume.py. A wrapper, so the training loop carries no test hook."""
import os
import signal
import sys

from lambdaopt import trainer
from lambdaopt.cli import main

EPOCH, STEP = int(sys.argv.pop(1)), int(sys.argv.pop(1))
_within_epoch = trainer.within_epoch


def term_at_step(batches, n_batches, epoch):
    for index, batch in enumerate(_within_epoch(batches, n_batches, epoch)):
        if epoch == EPOCH and index == STEP:
            os.kill(os.getpid(), signal.SIGTERM)  # handled as from outside: a flag the loop reads after the step
        yield batch


trainer.within_epoch = term_at_step
main()
