"""One Horovod rank's self-check: its place in the job, then collective values across hosts.

Run by every rank of a launched job; exits non-zero with a message if anything is wrong:

    python -m hvdlm.launch --hosts node01:2,node02:1 --netns -- \
        python tests/multihost/allreduce_check.py --hosts node01:2,node02:1 --in-netns

--hosts is the plan the launcher was given: the rank works out, independently of hvdlm, where
it should be (block order) and checks Horovod agrees. --in-netns also checks the rank really
runs in its host's namespace (it can bind the host's address). --process-sets adds a
collective on a process set of the first and last rank (a Gloo context Horovod 0.28.1 builds with
the hostname's address unless patched).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys


def expected_place(hosts: list[tuple[str, int]], rank: int) -> tuple[str, int, int, int, int]:
    """(host, local_rank, local_size, cross_rank, cross_size) of `rank` in block order."""
    flat = [(h, lr, n) for h, n in hosts for lr in range(n)]
    host, lr, n = flat[rank]
    with_lr = [h for h, m in hosts if m > lr]  # hosts that have a local rank lr
    return host, lr, n, with_lr.index(host), len(with_lr)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--hosts", required=True)
    p.add_argument("--in-netns", action="store_true")
    p.add_argument("--process-sets", action="store_true")
    p.add_argument("--no-iface", action="store_true",
                   help="unset HOROVOD_GLOO_IFACE: every Gloo context then binds the hostname's "
                        "address, as unpatched 0.28.1 does for process sets (a control)")
    p.add_argument("--elements", type=int, default=1 << 18)
    args = p.parse_args()
    hosts = [(h, int(n)) for h, n in (e.split(":") for e in args.hosts.split(","))]

    if args.no_iface:
        os.environ.pop("HOROVOD_GLOO_IFACE", None)
    import horovod.torch as hvd
    import torch

    size = sum(n for _, n in hosts)
    # First and last rank: on different hosts, so the set's own Gloo context spans hosts.
    # (With 2 ranks that set is the global one, which Horovod refuses to register twice.)
    ends = hvd.ProcessSet([0, size - 1]) if args.process_sets and size > 2 else None
    hvd.init(process_sets=[ends] if ends else None)
    r = hvd.rank()
    host, lr, ls, cr, cs = expected_place(hosts, r)
    got = (os.environ["HOROVOD_HOSTNAME"], hvd.size(), hvd.local_rank(), hvd.local_size(),
           hvd.cross_rank(), hvd.cross_size())
    want = (host, size, lr, ls, cr, cs)
    assert got == want, f"rank {r}: (host, size, local, local_size, cross, cross_size) {got} != {want}"
    if args.in_netns:
        # Binding the host's address only works inside that host's namespace.
        with socket.socket() as s:
            s.bind((socket.gethostbyname(host), 0))

    n = args.elements
    total = hvd.allreduce(torch.full((n,), float(r + 1)), op=hvd.Sum, name="sum")
    assert torch.all(total == size * (size + 1) / 2), f"rank {r}: allreduce sum {total[:3]}"
    for root in {0, size - 1}:
        data = torch.arange(8.0) * (root + 1) if r == root else torch.zeros(8)
        got_b = hvd.broadcast(data, root_rank=root, name=f"bcast{root}")
        assert torch.equal(got_b, torch.arange(8.0) * (root + 1)), f"rank {r}: broadcast {got_b}"
    gathered = hvd.allgather(torch.tensor([[float(r)] * 2]), name="gather")
    assert torch.equal(gathered[:, 0], torch.arange(float(size))), f"rank {r}: allgather {gathered}"
    if ends is not None and ends.included():
        s = hvd.allreduce(torch.tensor([float(r)]), op=hvd.Sum, process_set=ends, name="ends")
        assert s.item() == size - 1, f"rank {r}: process-set sum {s.item()}"
    hvd.barrier()  # a rank that shuts down early would end the others' process-set op
    hvd.shutdown()
    print(f"rank {r} ok on {host} (local {lr}/{ls}, cross {cr}/{cs})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
