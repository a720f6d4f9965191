"""Everything Horovod, in one place (the only module that imports it).

The distributed steps, in the order Horovod's own examples use them:
  1. `init()`              hvdlm's Horovod settings (`horovod_tuning`), hvd.init(); threads
                           per rank = cores / local ranks; pin the GPU.
  2. `wrap_optimizer()`    hvd.DistributedOptimizer: ring-allreduce of averaged gradients,
                           once per `grad_accum` backward passes, optional fp16 on the wire.
  3. `broadcast_model()`   parameters from rank 0 (a fresh optimizer has no state to send).
  4. `clip_and_step()`     synchronize(), unscale (fp16), clip, then step() without a second
                           allreduce, or skip on every rank together.
  5. `mean_async()`, `sum_()` metrics across ranks (the first without waiting for them);
                           `gather_tensor()` for per-rank RNG states (tensors only:
                           nothing that crosses between ranks is unpickled).

Works without horovodrun too: a lone `python -m hvdlm.train` (or `-np 1`) is a world of one,
which does not start Horovod: nothing is wrapped, broadcast or all-reduced. But several
processes started without a Horovod world (`srun -n 4` without hvdlm.launch, torchrun, an MPI
Horovod cannot use) would be as many worlds of one: `check_launch` refuses them, in init().
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from hvdlm import cli
from hvdlm.cluster import devices, runlock
from hvdlm.errors import HvdlmError, UsageError
from hvdlm.training.sharding import ShardedAdamW

try:
    import horovod.torch as hvd
except ModuleNotFoundError as err:  # reported in one line by the command that needs it
    raise HvdlmError(f"Horovod is not installed for {sys.executable}: run "
                     f"`make install PYTHON={sys.executable}` in the hvdlm checkout") from err



@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    local_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_active = False  # Horovod started (a world of more than one rank)
# On CPU an enqueue starts a cycle (our build's patch): the cycle time only paces idle ones.
CPU_TUNING = {"HOROVOD_WAKE_ON_ENQUEUE": "1", "HOROVOD_CYCLE_TIME": "50"}


def horovod_tuning(use_cuda: bool, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """hvdlm's Horovod settings for this rank, without the variables the user has set (they win).

    On CPU (Gloo) Horovod's background thread shares the rank's cores with the training loop,
    and upstream it runs a coordination cycle with every other rank each HOROVOD_CYCLE_TIME,
    idle or not, and a tensor enqueued just after a cycle waits for the next.
    scripts/horovod-patches/wake-on-enqueue.patch adds HOROVOD_WAKE_ON_ENQUEUE: an enqueue
    starts a cycle at once, so idle cycles can be rare without delaying any collective
    (measurements: docs/scaling/NOTES.md). One rank has nothing to coordinate, and GPUs leave
    the cores free: Horovod's defaults stay there.
    """
    tuned: dict[str, str] = {}
    if not use_cuda and launched_size(env) > 1:
        tuned.update(CPU_TUNING)
    return {k: v for k, v in tuned.items() if k not in env}


MPI_SIZES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")  # Open MPI; MPICH, Slurm's PMI
HOW_TO_LAUNCH = ("launch one Horovod job instead: srun ... python -m hvdlm.launch -- python -m "
                 "hvdlm.train ... (or horovodrun -np N python -m hvdlm.train ...)")


def _count(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env.get(name) or 0)
    except ValueError:
        return 0


def _mpi_size(env: Mapping[str, str]) -> int:
    return max(_count(env, name) for name in MPI_SIZES)


def launched_size(env: Mapping[str, str] = os.environ) -> int:
    """The world size a launcher (horovodrun, hvdlm.launch, mpirun) set up; 1 if none did.

    An MPI world counts only where Horovod was built with MPI (hvdlm's build is not:
    `check_launch` refuses one there)."""
    if env.get("HOROVOD_SIZE"):
        return int(env["HOROVOD_SIZE"])
    return max(1, _mpi_size(env)) if hvd.mpi_built() else 1


def launched_rank(env: Mapping[str, str] = os.environ) -> int:
    """This process's rank as its launcher set it, known before hvd.init() (0 if none did)."""
    return cli.launched_rank(env)


def check_launch(env: Mapping[str, str] = os.environ, mpi_built: bool | None = None) -> None:
    """UsageError (exit 2) when several processes were started without one Horovod world.

    `srun -n 4 python -m hvdlm.train` (no hvdlm.launch), torchrun, or mpirun with a Horovod
    built without MPI (hvdlm's: HOROVOD_WITHOUT_MPI=1) start N processes that Horovod does not
    join: each would be a world of one, all training into the same run folder. hvdlm.launch
    and horovodrun set HOROVOD_SIZE; horovodrun's mpirun mode (with an MPI build) is an MPI
    world that hvd.init() joins.
    """
    if env.get("HOROVOD_SIZE"):
        return
    if mpi_built is None:
        mpi_built = hvd.mpi_built()
    if mpi_built and _mpi_size(env) > 1:
        return  # hvd.init() joins the MPI world
    found = []
    tasks = _count(env, "SLURM_STEP_NUM_TASKS") or _count(env, "SLURM_NTASKS")
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env and tasks > 1:
        found.append(f"srun started {tasks} tasks")
    torch_size = max(_count(env, "WORLD_SIZE"), _count(env, "LOCAL_WORLD_SIZE"))
    if torch_size > 1:
        found.append(f"torchrun (or another torch.distributed launcher) started {torch_size} "
                     "processes")
    found += [f"an MPI launcher started {_count(env, name)} processes ({name})"
              for name in MPI_SIZES if _count(env, name) > 1]
    if found:
        raise UsageError(f"{found[0]} without a Horovod world: each would train alone, into "
                         f"the same run folder; {HOW_TO_LAUNCH}")


def init(device: str = "auto", run_dir: str | Path | None = None,
         pin_cores: bool = True, shared_run_dir: bool = False) -> World:
    """Start Horovod, share the cores fairly between local ranks, choose this rank's device.

    First refuses a wrong launch (`check_launch`), then rank 0 locks `run_dir` (runlock), both
    before hvd.init(): a refused process never joins a world, and its launcher (horovodrun,
    hvdlm.launch, srun --kill-on-bad-exit) ends the other ranks, which wait in hvd.init()
    (under a plain srun they abort there within seconds, once rank 0's rendezvous is gone).
    A world of one (no launcher, or `-np 1`) does not start Horovod at all: with nothing to
    communicate, its background thread would only take cycles from the one training thread.
    """
    global _active
    check_launch()
    if run_dir is not None and launched_rank() == 0:
        runlock.acquire(run_dir, shared=shared_run_dir)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if launched_size() > 1:
        os.environ.update(horovod_tuning(use_cuda))
        # Before hvd.init(): Horovod's background thread and torch's pool inherit the pinning.
        if pin_cores:
            _pin_local_rank(int(os.environ.get("HOROVOD_LOCAL_RANK", 0)),
                            int(os.environ.get("HOROVOD_LOCAL_SIZE", 1)))
        hvd.init()
        _active = True
        world = (hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size())
    else:
        world = (0, 1, 0, 1)
    if run_dir is not None and world[0] == 0:
        # already held, unless the launcher's rank was not Horovod's
        runlock.acquire(run_dir, shared=shared_run_dir)
    cores = len(os.sched_getaffinity(0))
    # Oversubscribed intra-op threads make every rank slower; OMP_NUM_THREADS wins if set.
    threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, cores // world[3])
    torch.set_num_threads(threads)
    dev = torch.device("cpu")
    if use_cuda:  # Horovod: pin one GPU per rank (cluster/devices.py refuses a shared one)
        dev = torch.device("cuda", devices.gpu_index(world[2], world[3],
                                                     torch.cuda.device_count()))
        torch.cuda.set_device(dev)
        if _active:
            keys = gather_tensor(torch.tensor(devices.gpu_key(dev)), name="gpu_keys")
            devices.refuse_shared([int(k) for k in keys])
    return World(*world, dev)


def _pin_local_rank(local_rank: int, local_size: int) -> None:
    """Give each local rank its own share of the cores, when nobody (Slurm, taskset) has.

    Unpinned ranks migrate between cores and their Horovod threads land on each other's
    cores; pinned, N ranks use N shares exactly. train.pin_cores=false turns this off.
    """
    allowed = sorted(os.sched_getaffinity(0))
    if local_size <= 1 or len(allowed) < local_size or len(allowed) != os.cpu_count():
        return
    share = len(allowed) // local_size
    os.sched_setaffinity(0, allowed[local_rank * share:(local_rank + 1) * share])


def wrap_optimizer(optimizer: torch.optim.Optimizer, model: torch.nn.Module, grad_accum: int,
                   fp16_allreduce: bool, world: World, shard: int = 0) -> torch.optim.Optimizer:
    """Horovod's DistributedOptimizer. On CPU all gradients go out as one group: one
    negotiation and one fused ring-allreduce per step (as DDP's buckets), instead of ~10 small
    ones each paying Horovod's latency; compute and Gloo share the same cores there, so the
    overlap with backward that separate groups buy on GPUs is worth little.

    `shard` 1 or 2 (train.shard_optimizer): training/sharding.py's ShardedAdamW over `Sharded`
    below instead; its gradients accumulate locally and are reduced once, at the step."""
    if world.size == 1:
        return optimizer  # nothing to average: no hooks, no copies, no background round trips
    compression = hvd.Compression.fp16 if fp16_allreduce else hvd.Compression.none
    if shard:
        return ShardedAdamW(optimizer, shard, world.rank, world.size, Sharded(compression))
    groups = 1 if world.device.type == "cpu" else None
    return hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                    backward_passes_per_step=grad_accum, op=hvd.Average,
                                    compression=compression, groups=groups)


class Sharded:
    """The collectives of a sharded optimizer step (training/sharding.py's `Collectives`)."""

    def __init__(self, compression=hvd.Compression.none):
        self.compression = compression

    def _wire(self, op, flat: torch.Tensor, name: str) -> torch.Tensor:
        sent, ctx = self.compression.compress(flat)
        return self.compression.decompress(op(sent, op=hvd.Average, name=name), ctx)

    def mean(self, flat: torch.Tensor) -> torch.Tensor:
        return self._wire(hvd.allreduce_, flat, "shard.grads")  # in place: no second copy

    def mean_slice(self, flat: torch.Tensor) -> torch.Tensor:
        return self._wire(hvd.reducescatter, flat, "shard.grad_slices")

    def gather(self, slices: list[torch.Tensor]) -> list[torch.Tensor]:
        return hvd.grouped_allgather(slices, name="shard.gather")

    def total(self, value: torch.Tensor) -> torch.Tensor:
        return hvd.allreduce(value, op=hvd.Sum, name="shard.norm")


def broadcast_model(model: torch.nn.Module) -> None:
    if _active:
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)


def clip_and_step(optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter],
                  max_norm: float, scaler=None) -> tuple[torch.Tensor, bool]:
    """Finish the allreduce, unscale (fp16), clip, and step unless the gradients are non-finite.

    Returns (gradient norm, a tensor read only where it is logged; stepped). The norm is of the
    averaged gradients, identical on every rank, so all ranks take the same decision; with an
    fp16 loss scaler (training/precision.py) they also agree on it by one small allreduce, as
    the scaler's state must stay the same everywhere. The finiteness is the one value read to
    the host every step.
    """
    if isinstance(optimizer, ShardedAdamW):  # reduces, clips and steps its own slice
        agreed = scaler is not None and scaler.enabled
        return optimizer.clip_and_step(
            max_norm, scaler.scale if agreed else 1.0,
            lambda overflow: not any_rank(overflow, name="overflow") if agreed else not overflow)
    params = list(params)
    distributed = hasattr(optimizer, "synchronize")  # not wrapped in a world of one
    if distributed:
        optimizer.synchronize()
    if scaler is not None:
        scaler.unscale_(params)
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    stepped = bool(torch.isfinite(norm))
    if scaler is not None and scaler.enabled:
        stepped = not any_rank(not stepped, name="overflow")
    if stepped and distributed:
        with optimizer.skip_synchronize():
            optimizer.step()
    elif stepped:
        optimizer.step()
    optimizer.zero_grad()  # torch >= 2.0 sets grads to None
    return norm, stepped


def _as_metric(values: torch.Tensor) -> torch.Tensor:
    """Metrics travel as fp64 on CPU: counts and loss sums stay exact, whatever the device."""
    return values.detach().double().cpu()


def mean_async(values: torch.Tensor, name: str) -> Callable[[], torch.Tensor]:
    """Start a mean over ranks; the returned function waits for it (blocking, not spinning).

    Horovod's background thread carries it out while this thread goes on computing.
    """
    values = _as_metric(values)
    if not _active:
        return lambda: values
    handle = hvd.allreduce_async(values, op=hvd.Average, name=name)
    return lambda: hvd.synchronize(handle)


def sum_(values: torch.Tensor, name: str) -> torch.Tensor:
    """Element-wise sum over ranks."""
    values = _as_metric(values)
    return hvd.allreduce(values, op=hvd.Sum, name=name) if _active else values


def gather_tensor(values: torch.Tensor, name: str) -> list[torch.Tensor]:
    """Every rank's `values` (same shape and dtype on all ranks), in rank order."""
    if not _active:
        return [values]
    # Clones, not views of one buffer: a checkpoint stores each on its own, as before.
    return [row.clone() for row in hvd.allgather(values.unsqueeze(0), name=name)]


def any_rank(flag: bool, name: str) -> bool:
    """Whether `flag` is true on any rank."""
    value = torch.tensor([float(flag)])
    return bool(hvd.allreduce(value, op=hvd.Sum, name=name) > 0) if _active else flag


def barrier() -> None:
    if _active:
        hvd.barrier()
