"""A sharded AdamW (ZeRO stages 1 and 2) over any data-parallel collectives; pure PyTorch.

    python -m hvdlm.train --data DATA --out RUN train.shard_optimizer=1   (or 2; docs/sharding.md)

The optimizer's parameters, in the order of its groups (decay, then no decay: an order that
depends on the model only), are laid end to end in one flat range padded to a multiple of the
world size N; rank r owns the r-th of N equal slices (`Layout`). Each rank keeps AdamW's moments
for its slice only, as one flat tensor per group the slice meets, and steps just those.
The gradients accumulate per parameter, as without sharding (allocated in backward while the
activations are freed, and dropped after the step); after the last of grad_accum backward
passes they are copied into one flat buffer, each freed once copied, and reduced in one call.

    stage 1: gradients all-reduced (averaged) whole, each rank steps its slice, the updated
             slices all-gathered into every rank's full weights
    stage 2: gradients reduce-scattered: each rank receives only the average of its slice;
             the clipping norm is the root of the ranks' summed squared slice norms

AdamW is element-wise, so a slice steps exactly as the whole tensor would. The weights stay
fp32 and whole on every rank (hvdlm trains under autocast): they are the master weights, and
unlike FSDP nothing is gathered for forward or backward. `state_dict()` gathers the moments
into the same full record a plain AdamW writes, and `load_state_dict()` takes any such record:
checkpoints do not depend on the world size or the stage. The collectives come from
hvdlm/cluster/distributed.py (`Collectives`); this module never imports Horovod.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import torch

MOMENTS = ("exp_avg", "exp_avg_sq")


class Collectives(Protocol):
    """What the sharded step needs from the ranks (hvdlm/cluster/distributed.py's `Sharded`)."""

    def mean(self, flat: torch.Tensor) -> torch.Tensor: ...        # all-reduce, averaged
    def mean_slice(self, flat: torch.Tensor) -> torch.Tensor: ...  # reduce-scatter, averaged
    def gather(self, slices: list[torch.Tensor]) -> list[torch.Tensor]: ...  # all-gather each
    def total(self, value: torch.Tensor) -> torch.Tensor: ...      # sum over ranks


@dataclass(frozen=True)
class Piece:
    """The part of one group's range that falls in this rank's slice."""
    group: int
    start: int     # in the flat range
    stop: int


class Layout:
    """Where each parameter lies in the flat range, and which part of it rank `rank` owns."""

    def __init__(self, groups: Sequence[Sequence[torch.Tensor]], rank: int, size: int):
        self.params = [p for group in groups for p in group]
        self.offsets = [0]
        for p in self.params:
            self.offsets.append(self.offsets[-1] + p.numel())
        self.numel = self.offsets[-1]
        self.padded = math.ceil(self.numel / size) * size
        self.slice_len = self.padded // size
        self.rank, self.size = rank, size
        lo, hi = rank * self.slice_len, (rank + 1) * self.slice_len
        self.pieces, first = [], 0
        for index, group in enumerate(groups):
            end = first + sum(p.numel() for p in group)
            if max(first, lo) < min(end, hi):
                self.pieces.append(Piece(index, max(first, lo), min(end, hi)))
            first = end

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Each parameter's part of a flat (padded) tensor, shaped like the parameter."""
        return [flat[a:b].view_as(p) for p, a, b in
                zip(self.params, self.offsets, self.offsets[1:])]

    def flatten(self, tensors: Sequence[torch.Tensor | None], free: Callable[[int], None]
                = lambda i: None) -> torch.Tensor:
        """One padded flat tensor of per-parameter tensors (None: zeros); `free(i)` after the
        i-th is copied, so a caller can drop it at once."""
        like = self.params[0]
        flat = torch.empty(self.padded, dtype=like.dtype, device=like.device)
        flat[self.numel:].zero_()
        for i, (view, value) in enumerate(zip(self.views(flat), tensors)):
            if value is None:
                view.zero_()
            else:
                view.copy_(value)
            free(i)
        return flat

    def local(self, piece: Piece, flat: torch.Tensor, whole: bool) -> torch.Tensor:
        """A piece's part of a flat tensor: the full range (`whole`) or this rank's slice."""
        base = 0 if whole else self.rank * self.slice_len
        return flat[piece.start - base:piece.stop - base]


class ShardedAdamW:
    """Stands where the optimizer stood: param_groups (the trainer sets lr there), zero_grad,
    state_dict/load_state_dict of the full record, and `clip_and_step` (distributed.py)."""

    def __init__(self, optimizer: torch.optim.Optimizer, stage: int, rank: int, size: int,
                 comm: Collectives):
        self.full, self.stage, self.comm = optimizer, stage, comm  # `full` is never stepped
        self.layout = Layout([g["params"] for g in optimizer.param_groups], rank, size)
        device = self.layout.params[0].device
        self.shards = [torch.zeros(p.stop - p.start, device=device) for p in self.layout.pieces]
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        self.inner = type(optimizer)([{**hyper[p.group], "params": [t]}
                                      for p, t in zip(self.layout.pieces, self.shards)])

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.full.param_groups

    def zero_grad(self) -> None:
        for p in self.layout.params:
            p.grad = None

    def state_bytes(self) -> int:
        """Bytes of the moments this rank holds (the optimizer's own tensors)."""
        return sum(v.numel() * v.element_size() for s in self.inner.state.values()
                   for v in s.values() if torch.is_tensor(v) and v.dim() > 0)

    # ---- one step -------------------------------------------------------------------------

    def reduce(self) -> torch.Tensor:
        """The averaged gradients: whole (stage 1) or this rank's slice (stage 2). Each
        parameter's .grad is dropped as soon as it is copied into the flat buffer."""
        params = self.layout.params
        flat = self.layout.flatten([p.grad for p in params],
                                   free=lambda i: setattr(params[i], "grad", None))
        return self.comm.mean(flat) if self.stage == 1 else self.comm.mean_slice(flat)

    def norm(self, grads: torch.Tensor) -> torch.Tensor:
        """The global gradient norm, the same on every rank."""
        if self.stage == 1:  # computed as torch.nn.utils.clip_grad_norm_ computes it
            norms = torch._foreach_norm(self.layout.views(grads))
            return torch.linalg.vector_norm(torch.stack(norms))
        squares = torch.linalg.vector_norm(grads, dtype=torch.float64).square()
        return self.comm.total(squares.reshape(1)).sqrt().to(grads.dtype).reshape(())

    def clip_and_step(self, max_norm: float, scale: float, agree: Callable[[bool], bool]
                      ) -> tuple[torch.Tensor, bool]:
        """Reduce, unscale by `scale`, clip to `max_norm` (0: no clipping), then step and gather
        the weights unless the norm is non-finite; `agree(overflow)` makes fp16's overflow a
        decision of all ranks. Returns (norm, stepped) as distributed.clip_and_step does."""
        grads = self.reduce()
        if scale != 1.0:
            grads.mul_(1.0 / scale)
        norm = self.norm(grads)
        if max_norm > 0:  # clip_grad_norm_'s coefficient, clamped: no growth below max_norm
            grads.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        stepped = agree(not bool(torch.isfinite(norm)))
        if stepped:
            self._step(grads)
            del grads
            self._gather_weights()
        self.zero_grad()
        return norm, stepped

    def _step(self, grads: torch.Tensor) -> None:
        """AdamW on this rank's slice, from the current weights (a broadcast or a load may
        have changed them) and the reduced gradients, with the trainer's lr and the rest."""
        weights = self._own_weights()
        for piece, shard, group in zip(self.layout.pieces, self.shards, self.inner.param_groups):
            shard.copy_(self.layout.local(piece, weights, whole=False))
            shard.grad = self.layout.local(piece, grads, whole=self.stage == 1)
            group.update({k: v for k, v in self.full.param_groups[piece.group].items()
                          if k != "params"})
        self.inner.step()
        for shard in self.shards:
            shard.grad = None

    def _gather_weights(self) -> None:
        mine = torch.zeros(self.layout.slice_len, device=self.layout.params[0].device)
        for piece, shard in zip(self.layout.pieces, self.shards):
            self.layout.local(piece, mine, whole=False).copy_(shard)
        (gathered,) = self.comm.gather([mine])
        with torch.no_grad():
            torch._foreach_copy_(self.layout.params, self.layout.views(gathered))

    def _own_weights(self) -> torch.Tensor:
        """This rank's slice of the flat weights (padding zero), from the parameters."""
        lo = self.layout.rank * self.layout.slice_len
        out = torch.zeros(self.layout.slice_len, device=self.layout.params[0].device)
        for p, a, b in zip(self.layout.params, self.layout.offsets, self.layout.offsets[1:]):
            s, e = max(a, lo), min(b, lo + self.layout.slice_len)
            if s < e:
                out[s - lo:e - lo] = p.detach().reshape(-1)[s - a:e - a]
        return out

    # ---- the full record ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The record a plain AdamW of the same parameters writes; every rank must call it."""
        record = self.full.state_dict()  # groups with their hyperparameters, no state
        if not self.inner.state:  # no step yet, on every rank alike
            return record
        slices = []
        for name in MOMENTS:
            mine = torch.zeros(self.layout.slice_len, device=self.shards[0].device)
            for piece, shard in zip(self.layout.pieces, self.shards):
                self.layout.local(piece, mine, whole=False).copy_(self.inner.state[shard][name])
            slices.append(mine)
        gathered = self.comm.gather(slices)
        step = next(iter(self.inner.state.values()))["step"]
        views = [self.layout.views(flat) for flat in gathered]
        record["state"] = {i: {"step": step.clone(),
                               **{n: v[i].clone() for n, v in zip(MOMENTS, views)}}
                           for i in range(len(self.layout.params))}
        return record

    def load_state_dict(self, record: dict[str, Any]) -> None:
        """Take a full record (any world size, any stage): keep this rank's slice of it."""
        self.full.load_state_dict(record)  # checks it and casts it; the whole state, briefly
        self.inner.state.clear()
        state = [self.full.state.get(p, {}) for p in self.layout.params]
        if any(state):
            step = next(s["step"] for s in state if s)
            for name in MOMENTS:
                flat = self.layout.flatten([s.get(name) for s in state])
                for piece, shard in zip(self.layout.pieces, self.shards):
                    self.inner.state[shard][name] = self.layout.local(piece, flat, True).clone()
                    self.inner.state[shard]["step"] = step.clone()
        self.full.state.clear()
