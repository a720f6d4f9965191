"""hvdlm's loader (windows/s) against raw `np.memmap` slicing of the same tokens.

    python -m benchmarks.dataloader [--data DIR] [--seq-len 2048] [--batch 8] [--out DIR]

Both read the same windows in the same shuffled order (hvdlm's GlobalOrder) and produce the
same (B, seq_len+1) int64 batches: hvdlm through `data.loader(TokenWindows, TrainBatches, 0)`,
the reference by slicing one np.memmap per shard at the `tokens` dataset's byte offset. The
files are read once first, so both run from the page cache; the passes alternate and the
figure is the median over `--repeats`. A third pass reads hvdlm's dataset and sampler
without torch's DataLoader, which shows what the DataLoader itself costs per batch. Goal:
hvdlm >= 0.9x the raw rate. Without --data a byte dataset of the stdlib's email, json and
logging packages is made in OUT/data (benchmarks.workload.make_dataset). Writes
OUT/report.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch

from benchmarks import report
from benchmarks.workload import make_dataset
from hvdlm.training import data


def raw_maps(windows: data.TokenWindows) -> list[np.memmap]:
    maps = []
    for path in windows.paths:
        with h5py.File(path, "r") as f:
            ds = f["tokens"]
            offset, shape, dtype = ds.id.get_offset(), ds.shape, ds.dtype
        maps.append(np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape))
    return maps


def raw_pass(maps: list[np.memmap], starts: np.ndarray, seq_len: int,
             batches: list[list[int]]) -> float:
    """Windows/s of plain memmap slicing into (B, seq_len+1) int64 tensors."""
    begin = time.perf_counter()
    for ids in batches:
        out = np.empty((len(ids), seq_len + 1), dtype=np.int64)
        for row, i in enumerate(ids):
            shard = int(np.searchsorted(starts, i, side="right")) - 1
            first = (i - int(starts[shard])) * seq_len
            out[row] = maps[shard][first:first + seq_len + 1]
        torch.from_numpy(out)
    return sum(map(len, batches)) / (time.perf_counter() - begin)


def hvdlm_pass(windows: data.TokenWindows, sampler: data.TrainBatches) -> float:
    begin = time.perf_counter()
    n = sum(batch.shape[0] for batch in data.loader(windows, sampler, 0))
    return n / (time.perf_counter() - begin)


def dataset_pass(windows: data.TokenWindows, sampler: data.TrainBatches) -> float:
    """hvdlm's dataset and sampler without torch's DataLoader (what num_workers=0 could do)."""
    begin = time.perf_counter()
    n = sum(windows.__getitems__(ids).shape[0] for ids in sampler)
    return n / (time.perf_counter() - begin)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.dataloader", description=__doc__.split("\n")[0])
    p.add_argument("--data", help="dataset folder (default: a byte dataset made in OUT/data)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2000, help="batches per pass (epochs wrap)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="runs/dataloader")
    args = p.parse_args(argv)
    out = Path(args.out)
    data_dir = Path(args.data) if args.data else make_dataset(out)
    windows = data.TokenWindows(data.open_dataset(data_dir), "train", args.seq_len)
    steps = args.steps
    sampler = data.TrainBatches(data.GlobalOrder(len(windows), 0), start_sample=0, start_step=0,
                                max_steps=steps, micro_batch=args.batch, grad_accum=1, rank=0,
                                world_size=1)
    batches = list(sampler)
    maps = raw_maps(windows)
    raw_pass(maps, windows.starts, args.seq_len, batches)  # page cache warm-up
    hv, raw, direct = [], [], []
    for _ in range(args.repeats):
        hv.append(hvdlm_pass(windows, sampler))
        raw.append(raw_pass(maps, windows.starts, args.seq_len, batches))
        direct.append(dataset_pass(windows, sampler))
    result = {"hvdlm_windows_per_s": report.median(hv),
              "raw_memmap_windows_per_s": report.median(raw),
              "hvdlm_without_dataloader_windows_per_s": report.median(direct),
              "seq_len": args.seq_len, "batch": args.batch,
              "windows_per_pass": sum(map(len, batches)), "repeats": args.repeats,
              "machine": report.machine_info()}
    result["ratio"] = result["hvdlm_windows_per_s"] / result["raw_memmap_windows_per_s"]
    report.write(out, result)
    direct_rate = result["hvdlm_without_dataloader_windows_per_s"]
    print(f"hvdlm loader {result['hvdlm_windows_per_s']:,.0f} windows/s, raw memmap "
          f"{result['raw_memmap_windows_per_s']:,.0f} windows/s: {result['ratio']:.2f}x "
          f"(goal >= 0.9x; {args.seq_len + 1}-token windows, batch {args.batch}); hvdlm's "
          f"dataset without torch's DataLoader {direct_rate:,.0f} windows/s "
          f"({direct_rate / result['raw_memmap_windows_per_s']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
