"""Run by every rank under horovodrun: training whose ranks build different initial parameters.

    horovodrun -np 2 -H localhost:2 --gloo python -m tests.multiproc.broadcast_check DATA RUN \
        [section.key=value ...]

Every rank seeds its model identically, so without a disagreement to remove nothing shows that
the initial broadcast happens. Here each rank r > 0 adds its own noise to the model it builds,
then the Trainer runs as `python -m hvdlm.train` would. Each rank prints whether the ranks'
parameters agreed as built (they must not) and at the first step (they must: the broadcast).
"""
import sys

import torch

from hvdlm.cluster import distributed
from hvdlm.config import load_config
from hvdlm.models import build_model
from hvdlm.training import trainer


def ranks_agree(model: torch.nn.Module, name: str) -> bool:
    flat = torch.cat([v.detach().flatten() for v in model.state_dict().values()])
    rows = distributed.gather_tensor(flat, name=name)
    return all(torch.equal(rows[0], row) for row in rows[1:])


def build_unequal(cfg):
    """The Trainer's build_model, plus noise seeded by the rank on every rank but 0."""
    model, rank = build_model(cfg), distributed.launched_rank()
    if rank > 0:
        noise = torch.Generator().manual_seed(rank)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=noise))
    print(f"rank {rank}: as built, ranks agree: {ranks_agree(model, 'as_built')}", flush=True)
    return model


class FirstStep(trainer.Callback):
    def on_step_start(self, t: trainer.Trainer) -> None:
        if t.step == 0:
            print(f"rank {t.world.rank}: at step 0, ranks agree: "
                  f"{ranks_agree(t.model, 'first_step')}", flush=True)


if __name__ == "__main__":
    data, run, *overrides = sys.argv[1:]
    trainer.build_model = build_unequal  # test only: the Trainer looks it up in its module
    sys.exit(trainer.train(load_config(None, overrides), data, run, callbacks=[FirstStep()]))
