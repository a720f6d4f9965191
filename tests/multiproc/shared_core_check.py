"""Run by test_horovod_collectives under horovodrun -np 2.

Pins both ranks, with all their threads, to one core and checks 200 64 KiB allreduces through
Horovod. Horovod's bundled Gloo spun its device thread while a busy pair lock's holder waited
for the core (scripts/horovod-patches/gloo-yield-on-busy-pair.patch): each allreduce then cost
a scheduler tick. What that costs is measured by benchmarks.allreduce on one core (see its
docstring), not here: a time bound on a shared machine is a race.
"""
import os

import horovod.torch as hvd
import torch

os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # threads made later inherit it
torch.set_num_threads(1)
hvd.init()
for i in range(200):
    got = hvd.allreduce(torch.full((16384,), float(hvd.rank() + i)), op=hvd.Sum, name="t")
    assert torch.equal(got, torch.full((16384,), float(1 + 2 * i))), (i, got)
print(f"rank {hvd.rank()}: 200 allreduces on one core ok", flush=True)
hvd.shutdown()
