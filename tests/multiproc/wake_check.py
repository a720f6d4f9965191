"""Run by test_horovod_collectives under horovodrun -np 2 with a 0.5 s HOROVOD_CYCLE_TIME.

Prints how long 4 synchronous allreduces took (and that their results are right): with
HOROVOD_WAKE_ON_ENQUEUE=1 each one starts a cycle when it is enqueued; without it, each waits
for the next cycle.
"""
import time

import horovod.torch as hvd
import torch

hvd.init()
hvd.allreduce(torch.ones(1), name="warmup")
start = time.perf_counter()
for i in range(4):
    got = hvd.allreduce(torch.full((4,), float(hvd.rank() + i)), op=hvd.Sum, name=f"t{i}")
    assert torch.equal(got, torch.full((4,), float(1 + 2 * i))), got
print(f"rank {hvd.rank()}: 4 allreduces in {time.perf_counter() - start:.2f} s", flush=True)
hvd.shutdown()
