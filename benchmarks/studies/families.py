"""Model families at equal size and equal time: GPT, Llama, LSTM, GRU and the gated CNN.

    python -m benchmarks.studies.families [--budget 90] [--params 800000] [--data DIR]
        [--out docs]

Each family is built at about --params parameters (its width chosen to come closest, depth
fixed: `FAMILIES`), then trained on the same byte-tokenized dataset, in the same sample order,
with the same optimizer, learning rate, batch and clipping (hvdlm's defaults), for --budget
seconds of training time: the warm-up and cosine schedule run over the time budget instead of a
step count, and evaluation is not counted. After every eighth of the budget the val split
is scored on its first 8 x 16 windows for the learning curve, and on all of it at the end (the
table). One process, one family after another, on one thread by default: on a machine that
other jobs keep busy, a second torch thread waits for cores the others hold, and small kernels
slowed down several-fold (measured with this benchmark on 2 cores at load 5-7.5: 1 thread gave
3-14x the tokens/s of 2).
Writes OUT/families.md (the table), OUT/families.json (everything, learning curves included)
and OUT/families.png (bits per byte against training seconds; needs hvdlm[bench]).

The default (5 x 90 s of training, plus evaluation: about 16 minutes on a loaded 2-core machine) is
short enough for a shared machine; the load averages in the report say how shared it was. The
dataset: the standard library's email, json, logging, http and xml packages (about 1.1 MB),
byte tokens, 5% of the files held out, made once in --work.
"""
from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmarks import ROOT, report
from hvdlm.config import ModelConfig, TrainConfig
from hvdlm.models import build_model, count_parameters
from hvdlm.training import data
from hvdlm.training.optim import lr_at, make_optimizer
from hvdlm.training.scoring import byte_lengths, score_windows, window_loss

SEQ_LEN, MICRO_BATCH, EVALS = 128, 16, 8
CURVE_BATCHES = 8  # val micro-batches per learning-curve point (the final score: all of them)
# Depth and the settings of each family; the width (n_embd) is fitted to --params.
FAMILIES = {
    "gpt": {"arch": "gpt", "n_layer": 4, "n_head": 4},
    "llama": {"arch": "llama", "n_layer": 4, "n_head": 4, "n_kv_head": 2},
    "lstm": {"arch": "lstm", "n_layer": 2},
    "gru": {"arch": "gru", "n_layer": 2},
    "cnn": {"arch": "cnn", "n_layer": 4, "kernel_size": 4, "dilation_growth": 2},
}
PACKAGES = ("email", "json", "logging", "http", "xml")
SCHEDULE_STEPS = 1000  # the schedule's resolution: training time in thousandths of the budget


def make_dataset(work: Path) -> Path:
    """The benchmark's byte dataset in WORK/data (made once; the copied corpus is scratch)."""
    out = work / "data"
    if (out / "manifest.json").exists():
        return out
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    with tempfile.TemporaryDirectory(prefix="hvdlm-families-") as corpus:
        for pkg in PACKAGES:
            for path in sorted((stdlib / pkg).rglob("*.py")):
                shutil.copy(path, Path(corpus, "_".join(path.relative_to(stdlib).parts)))
        subprocess.run([sys.executable, "-m", "hvdlm.preprocess", corpus, "--out", str(out),
                        "--tokenizer", "byte", "--val-fraction", "0.05", "--seed", "0"],
                       check=True, cwd=ROOT, capture_output=True, timeout=600)
    return out


def sized(family: str, vocab: int, target: int) -> ModelConfig:
    """The family's config whose parameter count is closest to `target` (widths step by 8)."""
    def config(width: int) -> ModelConfig:
        return ModelConfig(**FAMILIES[family], n_embd=width, seq_len=SEQ_LEN, vocab_size=vocab)
    best, best_off = config(8), math.inf
    for width in range(8, 4097, 8):  # the count grows with the width: stop once past target
        off = count_parameters(build_model(config(width))) - target
        if abs(off) < best_off:
            best, best_off = config(width), abs(off)
        if off > 0:
            break
    return best


def train_family(cfg: ModelConfig, manifest, budget: float, seed: int) -> dict[str, Any]:
    """Train for `budget` seconds of training time; the learning curve and final scores."""
    t = TrainConfig(max_steps=SCHEDULE_STEPS, warmup_steps=SCHEDULE_STEPS // 50, seed=seed)
    torch.manual_seed(seed)
    model = build_model(cfg)
    optimizer = make_optimizer(model, t)
    train_set = data.TokenWindows(manifest, "train", SEQ_LEN)
    val_set = data.TokenWindows(manifest, "val", SEQ_LEN)
    token_bytes = byte_lengths(manifest.open_tokenizer())
    order = data.TrainBatches(data.GlobalOrder(len(train_set), seed), start_sample=0,
                              start_step=0, max_steps=10**9, micro_batch=MICRO_BATCH,
                              grad_accum=1, rank=0, world_size=1)
    batches = iter(data.loader(train_set, order, 0))

    def scores(max_batches: int = CURVE_BATCHES) -> dict[str, float]:
        val = data.EvalBatches(len(val_set), MICRO_BATCH, 0, 1, max_batches)
        return score_windows(model, data.loader(val_set, val, 0), token_bytes,
                             torch.device("cpu"))

    curve = [{"train_s": 0.0, "step": 0, "train_loss": None, **scores()}]
    window_loss(model, next(iter(data.loader(val_set, data.EvalBatches(
        MICRO_BATCH, MICRO_BATCH, 0, 1), 0))))[0].backward()  # untimed: one-time kernel set-up
    optimizer.zero_grad()
    trained, step, recent = 0.0, 0, []
    model.train()
    while trained < budget:
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(int(SCHEDULE_STEPS * trained / budget), t)
        loss, _, _ = window_loss(model, next(batches))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        optimizer.zero_grad()
        trained += time.perf_counter() - started
        step += 1
        recent.append(loss.item())
        if trained >= budget * (len(curve)) / EVALS or trained >= budget:
            curve.append({"train_s": trained, "step": step,
                          "train_loss": sum(recent) / len(recent), **scores()})
            recent = []
    tokens = step * MICRO_BATCH * SEQ_LEN
    return {"config": asdict(cfg), "params": count_parameters(model), "steps": step,
            "train_s": trained, "tokens": tokens, "tokens_per_s": tokens / trained,
            "final": scores(max_batches=0), "curve": curve}


def shape(cfg: dict[str, Any]) -> str:
    extra = (f", kernel {cfg['kernel_size']}, dilation x{cfg['dilation_growth']}"
             if cfg["arch"] == "cnn" else "")
    return f"{cfg['n_layer']} x {cfg['n_embd']}{extra}"


def write_reports(out: Path, payload: dict[str, Any]) -> None:
    runs = payload["families"]
    rows = [[name, shape(r["config"]), f"{r['params']:,}", r["steps"],
             f"{r['tokens_per_s']:,.0f}", f"{r['final']['bits_per_byte']:.3f}",
             f"{r['final']['loss']:.3f}"] for name, r in runs.items()]
    table = report.md_table(["family", "layers x width", "parameters", "steps", "tokens/s",
                             "val bits/byte", "val loss (nats)"], rows)
    best = min(runs, key=lambda n: runs[n]["final"]["bits_per_byte"])
    fastest = max(runs, key=lambda n: runs[n]["tokens_per_s"])
    body = (f"{table}\n\nEach family: about {payload['params_target']:,} parameters, "
            f"{payload['budget_s']:g} s of training time on {payload['threads']} torch "
            f"thread{'s' if payload['threads'] != 1 else ''}, "
            f"micro-batch {MICRO_BATCH} x {SEQ_LEN} bytes, lr {payload['lr']:g} (warm-up and "
            f"cosine over the budget), one run each, one after another. Lowest bits per byte: "
            f"**{best}**; most tokens per second: **{fastest}**. The val split is "
            f"{payload['val_tokens']:,} bytes of held-out files ({payload['train_tokens']:,} "
            "bytes to train on). The machine was shared with other jobs: the load averages "
            "above are part of the result, and tokens/s move with them. The table scores the "
            f"whole val split; the curves its first {CURVE_BATCHES} x {MICRO_BATCH} windows."
            "\n\n"
            "![bits per byte against training time](families.png)")
    command = (f"`python -m benchmarks.studies.families --budget {payload['budget_s']:g} "
               f"--params {payload['params_target']}`")
    curves = report.Figure(
        "families.png", f"~{payload['params_target'] / 1e6:.2g}M parameters, "
        f"{payload['budget_s']:g} s each", "training seconds", "val bits per byte",
        {n: ([c["train_s"] for c in r["curve"]], [c["bits_per_byte"] for c in r["curve"]])
         for n, r in runs.items()})
    report.write(out, payload, "Model families at equal size and equal time",
                 [("Result", body), ("Reproduce", command)], [curves], name="families")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.studies.families",
                                description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=90.0, help="training seconds per family")
    p.add_argument("--params", type=int, default=800_000, help="parameters per family (about)")
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset")
    p.add_argument("--data", help="byte or BPE dataset folder (default: made in --work)")
    p.add_argument("--work", default="runs/families", help="where the default dataset is kept")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: see the module docstring)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out", default="docs")
    args = p.parse_args(argv)
    names = args.families.split(",")
    if args.budget <= 0 or args.params < 1000 or not set(names) <= set(FAMILIES):
        p.error(f"--budget must be > 0, --params >= 1000, --families a subset of "
                f"{','.join(FAMILIES)}")
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data) if args.data else make_dataset(Path(args.work))
    manifest = data.open_dataset(data_dir)
    runs = {}
    for name in names:
        cfg = sized(name, manifest.vocab_size, args.params)
        print(f"{name}: {shape(asdict(cfg))}, training {args.budget:g} s ...", flush=True)
        runs[name] = train_family(cfg, manifest, args.budget, args.seed)
        print(f"  {runs[name]['steps']} steps, {runs[name]['tokens_per_s']:,.0f} tokens/s, "
              f"val bits/byte {runs[name]['final']['bits_per_byte']:.3f}", flush=True)
    split_tokens = {s: sum(x.n_tokens for x in manifest.splits[s]) for s in ("train", "val")}
    payload = {"budget_s": args.budget, "params_target": args.params, "threads": args.threads,
               "seq_len": SEQ_LEN, "micro_batch": MICRO_BATCH, "lr": TrainConfig().lr,
               "data": str(data_dir), "train_tokens": split_tokens["train"],
               "val_tokens": split_tokens["val"], "machine": report.machine_info(),
               "families": runs}
    write_reports(Path(args.out), payload)
    print(f"wrote {Path(args.out) / 'families.md'}, families.json, families.png")
    return 0 if all(math.isfinite(r["final"]["loss"]) for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
