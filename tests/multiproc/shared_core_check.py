"""Run by test_horovod_collectives under horovodrun -np 2, with HVDLM_TEST_TORCH_PORT set.

Pins both ranks, with all their threads, to one core and prints the median time of 200
64 KiB allreduces through Horovod and through torch.distributed's Gloo (the control: Gloo
as torch ships it, measured on the same core in the same run). Horovod's bundled Gloo spun
its device thread until the next scheduler tick whenever a busy pair lock's holder waited
for the core (scripts/horovod-patches/gloo-yield-on-busy-pair.patch), so each allreduce
took a tick.
"""
import os
import statistics
import time

import horovod.torch as hvd
import torch
import torch.distributed as dist

os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # threads made later inherit it
torch.set_num_threads(1)
hvd.init()
port = os.environ["HVDLM_TEST_TORCH_PORT"]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=hvd.rank(),
                        world_size=hvd.size())


def median_ms(allreduce) -> float:
    t = torch.full((16384,), float(hvd.rank() + 1))
    for _ in range(20):
        allreduce(t)
    times = []
    for _ in range(200):
        start = time.perf_counter()
        allreduce(t)
        times.append(time.perf_counter() - start)
    got = allreduce(torch.full((16384,), float(hvd.rank() + 1)))
    assert got is None or torch.equal(got, torch.full((16384,), 3.0)), got
    return statistics.median(times) * 1e3


horovod_ms = median_ms(lambda t: hvd.allreduce(t, op=hvd.Sum, name="t"))
torch_ms = median_ms(lambda t: dist.all_reduce(t))
print(f"rank {hvd.rank()}: horovod {horovod_ms:.3f} ms, torch {torch_ms:.3f} ms", flush=True)
dist.destroy_process_group()
hvd.shutdown()
