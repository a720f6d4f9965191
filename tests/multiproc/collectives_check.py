"""Run by every rank under horovodrun: allreduce, broadcast and allgather, values checked here."""
import sys

import horovod.torch as hvd
import torch

hvd.init()
rank, size = hvd.rank(), hvd.size()

total = hvd.allreduce(torch.full((4,), float(rank + 1)), op=hvd.Sum, name="sum")
assert torch.equal(total, torch.full((4,), size * (size + 1) / 2)), total
average = hvd.allreduce(torch.arange(3.0) * (rank + 1), op=hvd.Average, name="avg")
assert torch.allclose(average, torch.arange(3.0) * (size + 1) / 2), average

tensor = torch.full((2, 2), 42.0) if rank == 0 else torch.zeros(2, 2)
assert torch.equal(hvd.broadcast(tensor, root_rank=0, name="bcast"), torch.full((2, 2), 42.0))

# Ranks contribute different lengths: allgather concatenates along dim 0, in rank order.
gathered = hvd.allgather(torch.full((rank + 1, 2), float(rank)), name="gather")
expected = torch.cat([torch.full((r + 1, 2), float(r)) for r in range(size)])
assert torch.equal(gathered, expected), gathered

print(f"rank {rank} of {size}: collectives ok", flush=True)
hvd.shutdown()
sys.exit(0)
