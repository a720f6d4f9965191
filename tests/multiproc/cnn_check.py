"""Run by every rank under horovodrun: two CNN runs in one Horovod job, to save a launch.

    horovodrun -np 2 -H localhost:2 --gloo python -m tests.multiproc.cnn_check DATA ROOT STEP \
        [section.key=value ...]

ROOT/whole trains from scratch, as `python -m hvdlm.train` would; then ROOT/resumed continues
ROOT/whole's checkpoint of step STEP to the same end, in the same processes (hvd.init() runs
once; the second run's call finds Horovod started). Everything the resumed run needs comes
from the checkpoint, so it must end bitwise where the whole run ended.
"""
import sys
from pathlib import Path

from hvdlm.config import load_config
from hvdlm.training import trainer

if __name__ == "__main__":
    data, root, step, *overrides = sys.argv[1:]
    cfg, root = load_config(None, overrides), Path(root)
    code = trainer.train(cfg, data, root / "whole", resume="never")
    checkpoint = root / "whole" / "checkpoints" / f"step-{int(step):08d}.pt"
    sys.exit(code or trainer.train(cfg, data, root / "resumed", resume=str(checkpoint)))
