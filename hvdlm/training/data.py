"""Token windows over HDF5 shards, in a global order that does not depend on the world size.

A window is seq_len+1 consecutive tokens of one shard (input = window[:-1], target =
window[1:]); shard k holds (n_tokens_k - 1) // seq_len windows, numbered after those of shards
0..k-1. Global sample g is window perm_e[g mod N] of epoch e = g div N, with perm_e a
permutation seeded by (seed, e). Optimizer step s with global batch G consumes global samples
[start + s·G, start + (s+1)·G); rank r of W takes the r-th contiguous slice of G/W samples and
splits it into micro-batches. Hence `-np 2` with micro-batch b sees exactly the samples of
`-np 1` with 2b, and a run may resume on any world size that divides G.

Shards are memory-mapped lazily in the process that reads them (after any DataLoader fork),
never before, through the byte offset of their contiguous `tokens` dataset.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hvdlm.errors import DataError, UsageError
from hvdlm.text import shards


class TokenWindows(Dataset):
    """Windows of `seq_len + 1` tokens over the shards of one split; item = window id."""

    def __init__(self, manifest: shards.Manifest, split: str, seq_len: int):
        if split not in manifest.splits or not manifest.splits[split]:
            raise DataError(f"{manifest.root / 'manifest.json'}: split {split!r} has no shards")
        self.seq_len = seq_len
        self.paths = [str(manifest.shard_path(s)) for s in manifest.splits[split]]
        counts = [max(0, (s.n_tokens - 1) // seq_len) for s in manifest.splits[split]]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if self.starts[-1] == 0:
            longest = max(s.n_tokens for s in manifest.splits[split])
            raise UsageError(f"config key model.seq_len ({seq_len}) leaves no window in split "
                             f"{split!r}: its largest shard has {longest} tokens")
        self._maps: dict[int, np.ndarray] = {}  # opened lazily, per process

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _tokens(self, shard: int) -> np.ndarray:
        if shard not in self._maps:
            self._maps[shard] = shards.open_tokens(self.paths[shard])
        return self._maps[shard]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.__getitems__([i])[0]

    def __getitems__(self, ids: list[int]) -> torch.Tensor:
        """A whole micro-batch at once, (B, seq_len + 1), without per-item collation."""
        ids = np.asarray(ids, dtype=np.int64)
        shard_of = np.searchsorted(self.starts, ids, side="right") - 1   # all rows at once
        begins = (ids - self.starts[shard_of]) * self.seq_len
        out = np.empty((len(ids), self.seq_len + 1), dtype=np.int64)
        for row, (shard, begin) in enumerate(zip(shard_of.tolist(), begins.tolist())):
            out[row] = self._tokens(shard)[begin:begin + self.seq_len + 1]
        return torch.from_numpy(out)

    def __getstate__(self) -> dict:
        # Memory maps never cross a fork or a pickle: each worker opens its own.
        return {**self.__dict__, "_maps": {}}


class GlobalOrder:
    """The seeded, world-size-independent order of global samples over epochs."""

    def __init__(self, n_windows: int, seed: int):
        self.n_windows, self.seed = n_windows, seed
        self._cache: dict[int, np.ndarray] = {}  # one epoch at a time: steps move forward

    def window_ids(self, first: int, count: int) -> np.ndarray:
        epoch, offset = divmod(first, self.n_windows)
        if offset + count <= self.n_windows:  # the usual case: one slice of one epoch's permutation
            return self._permutation(epoch)[offset:offset + count]
        epochs, offsets = np.divmod(np.arange(first, first + count, dtype=np.int64), self.n_windows)
        return np.concatenate([self._permutation(int(e))[offsets[epochs == e]]
                               for e in np.unique(epochs)])  # epochs ascend: order is kept

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache.clear()
            rng = np.random.default_rng([self.seed, epoch])
            self._cache[epoch] = rng.permutation(self.n_windows)
        return self._cache[epoch]


class TrainBatches(Sampler):
    """Yields, for each step from `start_step` on, this rank's micro-batches of window ids."""

    def __init__(self, order: GlobalOrder, *, start_sample: int, start_step: int, max_steps: int,
                 micro_batch: int, grad_accum: int, rank: int, world_size: int):
        self.order, self.start_sample = order, start_sample
        self.start_step, self.max_steps = start_step, max_steps
        self.micro_batch, self.grad_accum = micro_batch, grad_accum
        self.rank, self.world_size = rank, world_size

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * self.grad_accum

    def __iter__(self) -> Iterator[list[int]]:
        per_rank = self.micro_batch * self.grad_accum
        for step in range(self.start_step, self.max_steps):
            first = self.start_sample + (step - self.start_step) * self.global_batch
            mine = self.order.window_ids(first + self.rank * per_rank, per_rank)
            for k in range(self.grad_accum):
                yield mine[k * self.micro_batch:(k + 1) * self.micro_batch].tolist()


class EvalBatches(Sampler):
    """Windows in file order, strided over ranks (rank r takes r, r+W, ...), in micro-batches."""

    def __init__(self, n_windows: int, micro_batch: int, rank: int, world_size: int,
                 max_batches: int = 0):
        ids = list(range(rank, n_windows, world_size))
        self.batches = [ids[i:i + micro_batch] for i in range(0, len(ids), micro_batch)]
        self.batches = self.batches[:max_batches or None]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


def _as_batch(batch: torch.Tensor) -> torch.Tensor:
    return batch  # __getitems__ already stacked the micro-batch


class InlineLoader:
    """Micro-batches read in this process: a DataLoader with no workers, minus its per-batch
    machinery (a large share of the read time of small batches)."""

    def __init__(self, dataset: TokenWindows, batches: Sampler, pin_memory: bool = False):
        self.dataset, self.batches, self.pin_memory = dataset, batches, pin_memory

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for ids in self.batches:
            batch = self.dataset.__getitems__(ids)
            yield batch.pin_memory() if self.pin_memory else batch


def loader(dataset: TokenWindows, batches: Sampler, num_workers: int,
           pin_memory: bool = False) -> DataLoader | InlineLoader:
    """Micro-batches of windows; worker processes open the shards themselves after the fork.

    `pin_memory` (for a GPU): batches in page-locked memory, so `.to(cuda, non_blocking=True)`
    copies them while the GPU still computes."""
    if num_workers == 0:
        return InlineLoader(dataset, batches, pin_memory)
    # Each iterator draws its workers' base seed from `generator`, else from torch's global
    # RNG: that would shift the dropout stream a resumed run restores. Windows need no seed.
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                      collate_fn=_as_batch, persistent_workers=False, prefetch_factor=4,
                      pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(0))


def open_dataset(data_dir: str | Path) -> shards.Manifest:
    """Load the manifest and check that every shard it lists is present, whole and its own
    (the tokenizer is checked where it is opened: `Manifest.open_tokenizer`)."""
    manifest = shards.load_manifest(data_dir)
    for split in manifest.splits:
        shards.check_shard_files(manifest, split)
    return manifest
