"""Weak/strong scaling of the same GPT on the same data: hvdlm's trainer (Horovod) vs DDP.

    python -m benchmarks.scaling --np 1,2 --mode weak --out runs/scaling
    python -m benchmarks.scaling --np 1,2 --mode both --backends horovod,ddp --steps 30 --repeats 3
    python -m benchmarks.scaling --np 2 --backends horovod --timeline --out runs/timeline
    python -m benchmarks.scaling --hosts 2 --rate 1gbit --delay 0.2ms --np 1,2  (root)

Backends: `horovod` = `python -m hvdlm.train` itself (its settings, its metrics allreduce,
clipping), throughput from its metrics.jsonl; `ddp` = benchmarks/ddp_loop.py (torch.distributed
Gloo + DistributedDataParallel). Each rank is pinned to an equal share of the cores (1 core per
rank with 2 ranks on 2 cores; the 1-rank runs also get 1 core). Weak scaling fixes the per-rank
micro-batch, strong scaling the global batch. E(N) = tokens/s(N) / (N · tokens/s(1)) for weak,
speed-up / N for strong. Repeats interleave backends and N; figures are medians. With
`--allreduce DIR` (a benchmarks.allreduce report) the cost model of benchmarks/costmodel.py is
fitted and compared with the measurements. Writes DIR/report.json, DIR/report.md, DIR/*.png.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from benchmarks import report
from benchmarks.allreduce import (add_common, apply_common, cores_per_rank, emulate, run_ranks,
                                  shared_tmp, split_config)

MODEL = {"arch": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 128, "seq_len": 64}
BACKEND_CONFIG = {"horovod": "hvdlm", "ddp": "ddp"}  # the config each backend name means
# hvdlm-nostats: no per-step metrics allreduce (hvdlm itself sends all gradients as one group);
# hvdlm-nograds: hvdlm without averaging gradients (its Horovod, metrics, pinning, all else):
# what synchronous data parallelism costs here before a byte of gradient moves;
# nocomm: N ranks each train alone, side by side (the DDP loop without DDP): what sharing the
# machine costs with no communication at all, the ceiling for any data-parallel stack here.
CONFIGS = ("hvdlm", "hvdlm-nostats", "hvdlm-nograds", "ddp", "nocomm")
BLOCK = 5  # steps per timed block (hvdlm logs tokens/s every BLOCK steps)
COPY_ACTIVITIES = ("MEMCPY_IN_FUSION_BUFFER", "MEMCPY_OUT_FUSION_BUFFER")  # in the timeline


@dataclass
class Run:
    backend: str
    np: int
    mode: str
    tokens_per_s: float
    step_time_s: float
    efficiency: float
    config: str
    micro_batch: int
    cpu_s_per_step: float  # rank 0's process CPU time (all threads) per step
    efficiency_rounds: list[float]  # one per repeat, against that round's 1-rank run
    step_cv: float  # step-to-step variation: standard deviation / mean, all ranks and rounds
    relative_step_times: list[float]  # every rank's step times over its round's mean


# ---------------------------------------------------------------- data

def make_dataset(out: Path) -> Path:
    """A byte-tokenized dataset of the stdlib's email, json and logging packages (~1 MB), kept
    in OUT/data for later runs; the copied corpus is scratch."""
    data = out / "data"
    if (data / "manifest.json").exists():
        return data
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    with tempfile.TemporaryDirectory(prefix="hvdlm-scaling-corpus-") as corpus:
        for pkg in ("email", "json", "logging"):
            for path in sorted((stdlib / pkg).glob("*.py")):
                shutil.copy(path, Path(corpus, f"{pkg}_{path.name}"))
        subprocess.run([sys.executable, "-m", "hvdlm.preprocess", corpus, "--out", str(data),
                        "--tokenizer", "byte", "--seed", "0"], check=True, cwd=report.ROOT,
                       capture_output=True, timeout=600)
    return data


# ---------------------------------------------------------------- inside a rank

def _pin(log: str) -> tuple[int, int]:
    from benchmarks.ddp_loop import env_rank, pin_rank, quiet
    rank, size, _, _ = env_rank()
    quiet(f"{log}.rank{rank}.log")
    pin_rank()
    return rank, size


def hvdlm_worker(config: str, data: str, micro_batch: int, steps: int, run_dir: str,
                 result: str) -> None:
    """Run `hvdlm.train` in this (pinned) process; rank 0 reports tokens/s of timed blocks.

    Each step is timed from the start of one `Trainer._train_step` call to the next, so the
    whole loop iteration counts (clipping, metrics allreduce, logging), as in DDP's loop.
    """
    from benchmarks.ddp_loop import StepClock
    rank, size = _pin(result)
    base, _ = split_config(config, CONFIGS)
    if base == "hvdlm-nostats":  # what the per-step metrics allreduce costs: skip it
        from hvdlm.training import distributed
        real_mean = distributed.mean_async
        distributed.mean_async = lambda v, name: ((lambda: v.double()) if name.startswith(
            "step_stats") else real_mean(v, name))
    if base == "hvdlm-nograds":  # the ranks' models drift apart; their throughput is the point
        from hvdlm.training import distributed
        distributed.wrap_optimizer = lambda optimizer, *_: optimizer
    from hvdlm import train
    clock, real_step = StepClock(), train.Trainer._train_step

    def timed_step(self, micro_batches):
        clock.tick()
        return real_step(self, micro_batches)

    train.Trainer._train_step = timed_step
    overrides = [f"model.{k}={v}" for k, v in MODEL.items()] + [
        f"train.micro_batch={micro_batch}", f"train.max_steps={BLOCK + steps + 1}",
        f"train.log_interval={BLOCK}", "train.eval_interval=1000000",
        "train.ckpt_interval=1000000", "train.warmup_steps=2", "train.device=cpu",
        "train.num_workers=0"]
    code = train.main(["--data", data, "--out", run_dir, "--resume", "never", *overrides])
    if code != 0:
        raise SystemExit(code)
    write_result(result, rank, *clock.deltas(BLOCK), size * micro_batch * MODEL["seq_len"])


def ddp_worker(data: str, micro_batch: int, steps: int, result: str, comm: bool = True) -> None:
    """The same model, init and samples, trained by the minimal DDP loop (without DDP and
    without a process group when not `comm`: then every rank trains alone). It keeps freed
    memory as hvdlm's trainer does: glibc's page faults otherwise slow some runs (and not
    others) by up to 40%, which no data-parallel stack is to blame for."""
    import torch
    from benchmarks import ddp_loop
    from hvdlm.training import data as hdata
    from hvdlm.config import ModelConfig
    from hvdlm.training.malloc import keep_freed_memory
    from hvdlm.models import build_model
    rank, size = _pin(result)
    keep_freed_memory()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    distributed = comm and size > 1
    if distributed:
        ddp_loop.init_torch_dist()
    manifest = hdata.open_dataset(data)
    windows = hdata.TokenWindows(manifest, "train", MODEL["seq_len"])
    sampler = hdata.TrainBatches(hdata.GlobalOrder(len(windows), 1337), start_sample=0,
                                 start_step=0, max_steps=BLOCK + steps, micro_batch=micro_batch,
                                 grad_accum=1, rank=rank, world_size=size)
    batches = [windows.__getitems__(ids) for ids in sampler]
    torch.manual_seed(1337)
    model = build_model(ModelConfig(**MODEL, vocab_size=manifest.vocab_size, dropout=0.0))
    res = ddp_loop.train_steps(model, batches, steps, BLOCK, distributed=distributed)
    if distributed:
        torch.distributed.destroy_process_group()
    write_result(result, rank, res.step_times, res.cpu_times, size * res.tokens_per_step)


def write_result(path: str, rank: int, walls: list[float], cpus: list[float],
                 tokens_per_step: int) -> None:
    """Every rank's step times (the cost model's straggler term), in PATH.rankR; rank 0's
    figures in PATH: tokens/s = tokens per step / median over blocks of mean step time."""
    Path(f"{path}.rank{rank}").write_text(json.dumps({"step_times": walls}))
    if rank != 0:
        return
    blocks = [sum(walls[i:i + BLOCK]) / BLOCK for i in range(0, len(walls) - BLOCK + 1, BLOCK)]
    step = report.median(blocks or walls)
    Path(path).write_text(json.dumps({"tokens_per_s": tokens_per_step / step,
                                      "cpu_s_per_step": report.median(cpus)}))


# ---------------------------------------------------------------- the driver

def one_run(config: str, np_: int, micro_batch: int, data: Path, steps: int, hosts: int,
            tmp: Path, share: int) -> dict:
    """One job of np_ ranks: rank 0's {"tokens_per_s", "cpu_s_per_step"} and "step_times",
    one list per rank."""
    result = tmp / "result.json"
    ranks = [Path(f"{result}.rank{r}") for r in range(np_)]
    for path in (result, *ranks):
        path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.scaling", "--worker", config, "--data", str(data),
           "--micro-batch", str(micro_batch), "--steps", str(steps), "--result", str(result),
           "--run-dir", str(tmp / "run")]
    shutil.rmtree(tmp / "run", ignore_errors=True)
    run_ranks(np_, cmd, split_config(config, CONFIGS)[1], hosts, share=share)
    return {**json.loads(result.read_text()),
            "step_times": [json.loads(p.read_text())["step_times"] for p in ranks]}


def plan(args: argparse.Namespace) -> list[tuple[str, str, int, int]]:
    """(config, mode, np, per-rank micro-batch) for every measurement."""
    nps = sorted({int(n) for n in args.np.split(",")} | {1})
    modes = ["weak", "strong"] if args.mode == "both" else [args.mode]
    configs = args.configs.split(",") if args.configs else [BACKEND_CONFIG[b]
                                                           for b in args.backends.split(",")]
    out = []
    for mode in modes:
        for config in configs:
            for n in nps:
                mb = args.micro_batch if mode == "weak" else max(1, args.global_batch // n)
                out.append((config, mode, n, mb))
    return out


def measure(args: argparse.Namespace, data: Path) -> list[Run]:
    items = plan(args)
    share = cores_per_rank(max(n for _, _, n, _ in items))  # the 1-rank runs get one share too
    got: dict[tuple, list[dict[str, float]]] = {item: [] for item in items}
    with tempfile.TemporaryDirectory(prefix="hvdlm-scaling-", dir=shared_tmp()) as tmp:
        for rnd in range(args.repeats):
            for item in items if rnd % 2 == 0 else items[::-1]:
                config, _, n, mb = item
                got[item].append(one_run(config, n, mb, data, args.steps, args.hosts, Path(tmp),
                                         share))
                last = got[item][-1]
                print(f"  round {rnd + 1}: {item} {last['tokens_per_s']:,.0f} tokens/s, CPU "
                      f"{last['cpu_s_per_step'] * 1e3:.1f} ms/step", flush=True)
    runs = []
    for (config, mode, n, mb), values in got.items():
        tps = report.median(v["tokens_per_s"] for v in values)
        base = got[(config, mode, 1, args.micro_batch if mode == "weak" else args.global_batch)]
        # This machine's speed drifts from minute to minute: each round's N-rank run is divided
        # by the 1-rank run measured next to it, and the efficiency is the median of those
        # ratios. E = tokens/s(N) / (N · tokens/s(1)) in both modes (for strong scaling, with
        # the global batch fixed, that is the speed-up over N).
        ratios = [v["tokens_per_s"] / (n * b["tokens_per_s"]) for v, b in zip(values, base)]
        backend = {"ddp": "ddp", "nocomm": "none"}.get(split_config(config, CONFIGS)[0],
                                                      "horovod")
        cpu = report.median(v["cpu_s_per_step"] for v in values)
        rel = relative_step_times(v["step_times"] for v in values)
        runs.append(Run(backend, n, mode, tps, n * mb * MODEL["seq_len"] / tps,
                        report.median(ratios), config, mb, cpu, ratios,
                        report.variation(rel), rel))
    return runs


def relative_step_times(rounds: Iterable[list[list[float]]]) -> list[float]:
    """Each round's per-rank step times over that round's mean (drift between rounds is not
    step-to-step variation), pooled."""
    out = []
    for per_rank in rounds:
        times = [t for steps in per_rank for t in steps]
        mean = statistics.fmean(times)
        out += [round(t / mean, 4) for t in times]
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.scaling", description=__doc__.split("\n")[0])
    p.add_argument("--np", default="1,2", help="rank counts, e.g. 1,2 (1 is always added)")
    p.add_argument("--mode", default="weak", choices=["weak", "strong", "both"])
    p.add_argument("--out", default="runs/scaling")
    p.add_argument("--backends", default="horovod,ddp")
    p.add_argument("--configs", help="explicit list: hvdlm, hvdlm-nostats, hvdlm-nograds, ddp, "
                   "nocomm, hvdlm+ENV=V...")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run (after warm-up)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--micro-batch", type=int, default=12, help="weak: per-rank micro-batch")
    p.add_argument("--global-batch", type=int, default=24, help="strong: global batch")
    p.add_argument("--data", help="dataset folder (default: make a byte dataset in OUT/data)")
    p.add_argument("--allreduce", help="a benchmarks.allreduce report folder: fit the cost model")
    p.add_argument("--timeline", action="store_true", help="record and summarise a Horovod timeline")
    p.add_argument("--predict-params", type=float, help="cost model: parameters of the model to "
                   "predict for on the named networks (default: the benchmark's GPT)")
    p.add_argument("--predict-compute-s", type=float, help="cost model: its 1-rank step time "
                   "(default: this machine's, scaled by parameters)")
    p.add_argument("--overlap", type=float, default=0.0, help="cost model: hidden fraction h")
    add_common(p)
    p.add_argument("--hosts", type=int, default=0, help="emulated hosts (root; see scripts/)")
    p.add_argument("--rate", default="1gbit")
    p.add_argument("--delay", default="0ms")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        base = split_config(args.worker, CONFIGS)[0]
        if base in ("ddp", "nocomm"):
            ddp_worker(args.data, args.micro_batch, args.steps, args.result, base == "ddp")
        else:
            hvdlm_worker(args.worker, args.data, args.micro_batch, args.steps, args.run_dir,
                         args.result)
        return 0
    apply_common(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else make_dataset(out)
    if args.hosts:
        emulate("up", args.hosts, args.rate, args.delay)
    try:
        runs = measure(args, data)
        timeline = record_timeline(data, args) if args.timeline else None
    finally:
        if args.hosts:
            emulate("down")
    model = cost_model(runs, args, data, timeline)
    write_report(out, runs, model, args, timeline)
    for r in runs:
        print(f"{r.backend:8s} {r.config:14s} {r.mode:6s} np={r.np} {r.tokens_per_s:10,.0f} "
              f"tokens/s  step {r.step_time_s * 1e3:7.1f} ms  efficiency {r.efficiency:.3f}")
    print(f"report: {out / 'report.md'}")
    return 0


def record_timeline(data: Path, args: argparse.Namespace) -> dict:
    """hvdlm at the largest N with HOROVOD_TIMELINE; time per activity, summed over tensors."""
    from benchmarks.costmodel import summarise_timeline
    n = max(int(x) for x in args.np.split(","))
    with tempfile.TemporaryDirectory(prefix="hvdlm-tl-", dir=shared_tmp()) as tmp:
        path = Path(tmp, "timeline.json")
        one_run(f"hvdlm+HOROVOD_TIMELINE={path}", n, args.micro_batch, data, 10, args.hosts,
                Path(tmp), cores_per_rank(n))
        return summarise_timeline(path, steps=BLOCK + 10)


# ---------------------------------------------------------------- cost model and report

def grad_bytes(data: Path) -> int:
    from hvdlm.config import ModelConfig
    from hvdlm.training.data import open_dataset
    from hvdlm.models import build_model, count_parameters
    cfg = ModelConfig(**MODEL, vocab_size=open_dataset(data).vocab_size)
    return 4 * count_parameters(build_model(cfg))


def cost_model(runs: list[Run], args: argparse.Namespace, data: Path,
               timeline: dict | None) -> dict:
    """Fit α, β (from --allreduce, else a short measurement now) and predict E(N)."""
    from benchmarks import allreduce, costmodel
    nmax = max(r.np for r in runs)
    if args.allreduce:
        fit = costmodel.fit_report(Path(args.allreduce))
    else:
        sizes = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]
        rows, _ = allreduce.measure(["hvdlm"], max(2, nmax), sizes, 10, 1, args.hosts)
        fit = costmodel.fit((r.np, r.bytes, r.time_s) for r in rows)
    weak = {r.np: r for r in runs if r.mode == "weak" and r.config == "hvdlm"}
    if 1 not in weak:
        return {}
    gbytes = grad_bytes(data)
    compute = measured_compute(runs, weak[1], timeline, gbytes)
    comm_only = costmodel.Compute(compute.seconds)

    def efficiencies(c: costmodel.Compute) -> dict[str, float]:
        return {str(n): costmodel.efficiency(n, c, gbytes, fit.alpha_s, fit.beta_s_per_byte,
                                             args.overlap) for n in costmodel.PREDICT_N}

    predicted = efficiencies(compute)
    user_bytes = 4 * args.predict_params if args.predict_params else gbytes
    user_compute = args.predict_compute_s or compute.seconds * user_bytes / gbytes
    user = replace(compute, seconds=user_compute)
    measured = {str(n): r.efficiency for n, r in weak.items() if n > 1}
    return {"alpha_s": fit.alpha_s, "beta_s_per_byte": fit.beta_s_per_byte,
            "fit_max_rel_error": fit.max_rel_error, "compute_s": compute.seconds,
            "shared_throughput": compute.shared_throughput,
            "copy_s_per_byte": compute.copy_s_per_byte, "compute_source": compute.source,
            "straggler_factor": {n: costmodel.expected_max(compute.relative_steps, int(n))
                                 for n in predicted},
            "relative_step_times": list(compute.relative_steps),
            "grad_bytes": gbytes, "overlap": args.overlap, "predicted_efficiency": predicted,
            "predicted_efficiency_comm_only": efficiencies(comm_only),
            "measured_efficiency": measured,
            "prediction_error": {n: predicted[n] / e - 1 for n, e in measured.items()
                                 if n in predicted},
            "implied_overlap": {str(n): costmodel.measured_overlap(
                compute, r.step_time_s, n, gbytes, fit.alpha_s, fit.beta_s_per_byte)
                for n, r in weak.items() if n > 1},
            "networks": {"model_params": user_bytes / 4, "compute_s": user_compute,
                         **costmodel.predictions(user, user_bytes, fit, args.overlap)},
            "assumptions": costmodel.assumptions(compute, args.overlap)}


def measured_compute(runs: list[Run], solo: Run, timeline: dict | None,
                     gbytes: int) -> costmodel.Compute:
    """The model's measured terms besides the ring. From the weak runs of the first of
    `hvdlm-nograds` (all of hvdlm but the gradient allreduce) and `nocomm` (ranks training
    alone side by side) measured at N > 1, at their largest N: s = their efficiency, capped at
    1 (more is noise), and their step-time distribution; without either, s = 1 and the steps
    of hvdlm's 1-rank run `solo`, whose step time is c. From the timeline: the fusion-buffer
    copies per gradient byte."""
    from benchmarks import costmodel
    ms = (timeline or {}).get("ms_per_step", {})
    copy = sum(ms.get(k, 0.0) for k in COPY_ACTIVITIES) / 1e3 / gbytes
    for config in ("hvdlm-nograds", "nocomm"):
        without = {r.np: r for r in runs if r.mode == "weak" and r.config == config}
        if max(without, default=1) > 1:
            largest = without[max(without)]
            return costmodel.Compute(solo.step_time_s, min(1.0, largest.efficiency),
                                     largest.relative_step_times, copy, config)
    return costmodel.Compute(solo.step_time_s, 1.0, solo.relative_step_times, copy, "hvdlm")


def write_report(out: Path, runs: list[Run], model: dict, args: argparse.Namespace,
                 timeline: dict | None) -> None:
    from benchmarks.costmodel import markdown_sections
    machine = report.machine_info()
    payload = {"runs": [asdict(r) for r in runs], "model": model, "timeline": timeline,
               "settings": {"model": MODEL, "steps": args.steps, "repeats": args.repeats,
                            "micro_batch": args.micro_batch, "global_batch": args.global_batch,
                            "hosts": args.hosts, "rate": args.rate, "delay": args.delay,
                            "nice": args.nice},
               "machine": machine}
    report.write_json(out, payload)
    sections = [("Measured", runs_section(runs, args)), *markdown_sections(model)]
    if timeline:
        sections.append(("Horovod timeline", timeline_section(timeline)))
    report.write_md(out, "Scaling: hvdlm (Horovod) vs DDP", sections, machine)
    plots(out, runs, model)


def runs_section(runs: list[Run], args: argparse.Namespace) -> str:
    where = (f"{args.hosts} emulated hosts (rate {args.rate}, delay {args.delay})"
             if args.hosts else "one machine")
    text = (f"GPT {MODEL['n_layer']} layers x {MODEL['n_embd']} wide, {MODEL['seq_len']}-token "
            f"windows; weak: {args.micro_batch} windows per rank, strong: {args.global_batch} "
            f"in all; {args.steps} timed steps after {BLOCK} warm-up steps, median of "
            f"{args.repeats} interleaved repeats; {where}; each rank pinned to an equal share of "
            f"the cores{f', nice {args.nice}' if args.nice else ''}. Efficiency: the median over "
            f"rounds of each round's N-rank tokens/s against the 1-rank run measured next to it "
            f"(this machine's speed drifts from minute to minute).\n\n")
    table = report.md_table(
        ["backend", "config", "mode", "N", "micro-batch", "tokens/s", "step (ms)", "efficiency",
         "rounds' range", "CPU ms/step (rank 0)", "step-to-step CV"],
        [(r.backend, r.config, r.mode, r.np, r.micro_batch, r.tokens_per_s, r.step_time_s * 1e3,
          r.efficiency, f"{min(r.efficiency_rounds):.2f}-{max(r.efficiency_rounds):.2f}",
          r.cpu_s_per_step * 1e3, f"{r.step_cv:.1%}")
         for r in sorted(runs, key=lambda r: (r.mode, r.config, r.np))])
    eff = {(r.config, r.mode, r.np): r.efficiency for r in runs}
    lines = [f"- {mode} N={n}: hvdlm {eff[('hvdlm', mode, n)]:.3f}, DDP {eff[('ddp', mode, n)]:.3f}"
             for (c, mode, n) in sorted(eff) if c == "hvdlm" and n > 1 and ("ddp", mode, n) in eff]
    return text + table + ("\n\nEfficiency side by side:\n" + "\n".join(lines) if lines else "")


def timeline_section(tl: dict) -> str:
    rows = [(name, ms, tl["ops_per_step"][name], tl["tensor_events_per_step"][name])
            for name, ms in tl["ms_per_step"].items()]
    return ("Wall time per training step in each Horovod activity (spans of all tensors merged; "
            "it overlaps with compute), from HOROVOD_TIMELINE of rank 0 over "
            f"{tl['steps']} steps (start-up included):\n\n"
            + report.md_table(["activity", "ms/step", "operations/step", "tensor events/step"],
                              rows))


def plots(out: Path, runs: list[Run], model: dict) -> None:
    for mode in sorted({r.mode for r in runs}):
        eff, tps = {}, {}
        for config in sorted({r.config for r in runs}):
            mine = sorted((r.np, r.efficiency, r.tokens_per_s) for r in runs
                          if r.mode == mode and r.config == config)
            eff[f"{config} (measured)"] = ([n for n, _, _ in mine], [e for _, e, _ in mine])
            tps[config] = ([n for n, _, _ in mine], [t for _, _, t in mine])
        if mode == "weak" and model:
            pred = model["predicted_efficiency"]
            eff["hvdlm, cost model"] = ([int(n) for n in pred], list(pred.values()))
        report.line_plot(out / f"efficiency_{mode}.png", eff, xlabel="ranks N",
                         ylabel="efficiency", logx=True, title=f"{mode} scaling efficiency",
                         styles={"hvdlm, cost model": "--"})
        report.line_plot(out / f"tokens_per_s_{mode}.png", tps, xlabel="ranks N",
                         ylabel="tokens/s", title=f"{mode} scaling throughput")
    if model:
        nets = {name: ([int(n) for n in v["efficiency"]], list(v["efficiency"].values()))
                for name, v in model["networks"].items() if isinstance(v, dict)}
        report.line_plot(out / "predicted_networks.png", nets, xlabel="ranks N",
                         ylabel="predicted efficiency", logx=True,
                         title=f"cost model, {model['networks']['model_params'] / 1e6:.1f}M "
                               f"parameters, weak scaling")


if __name__ == "__main__":
    sys.exit(main())
