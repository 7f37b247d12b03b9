"""The CLI, ending its process right after the first checkpoint of $STOP_STAGE is written: a
crash at a known point, for resume tests under torchrun (the other ranks then fail too)."""

import os
import sys

from pivotal_sae.absorption.jobs import checkpoints
from pivotal_sae.cli import main

_save = checkpoints.Checkpoints.save


def _save_then_stop(self, stage, contexts_done, writers):
    _save(self, stage, contexts_done, writers)
    if stage == os.environ["STOP_STAGE"]:
        os._exit(3)


checkpoints.Checkpoints.save = _save_then_stop
sys.exit(main(sys.argv[1:]))
