"""Run by every rank under horovodrun: the bytes of AdamW state a rank holds, sharded or not.

    horovodrun -np 4 -H localhost:4 --gloo python -m tests.multiproc.sharding_check DATA RUN \
        train.shard_optimizer=2 [section.key=value ...]

The Trainer runs as `python -m hvdlm.train` would; after its last step each rank prints the
bytes of the moments its optimizer holds (its own tensors: the sharded optimizer's slices, or
the plain AdamW's whole state) and the number of elements in the model's parameters.
"""
import sys

import torch

from hvdlm.config import load_config
from hvdlm.training import trainer


def moment_bytes(optimizer) -> int:
    inner = getattr(optimizer, "inner", optimizer)  # ShardedAdamW keeps its slices there
    return sum(v.numel() * v.element_size() for s in inner.state.values() for v in s.values()
               if torch.is_tensor(v) and v.dim() > 0)


class Report(trainer.Callback):
    def on_step_end(self, t: trainer.Trainer, loss: torch.Tensor) -> None:
        if t.step == t.t.max_steps:
            print(f"rank {t.world.rank}: state bytes {moment_bytes(t.optimizer)} parameters "
                  f"{sum(p.numel() for p in t.model.parameters())}", flush=True)


if __name__ == "__main__":
    data, run, *overrides = sys.argv[1:]
    sys.exit(trainer.train(load_config(None, overrides), data, run, callbacks=[Report()]))
