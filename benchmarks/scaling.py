"""Weak/strong scaling of the same GPT on the same data: hvdlm's trainer (Horovod) vs DDP.

    python -m benchmarks.scaling --np 1,2 --mode weak --out runs/scaling
    python -m benchmarks.scaling --np 1,2 --mode both --backends horovod,ddp --steps 30 --repeats 3
    python -m benchmarks.scaling --np 2 --backends horovod --timeline --out runs/timeline
    python -m benchmarks.scaling --hosts 2 --rate 1gbit --delay 0.2ms --np 1,2  (root)
    python -m benchmarks.scaling --device cuda --np 1,2,4 --micro-batch 32 --out runs/sc-gpu

Backends: `horovod` = hvdlm's trainer itself (`hvdlm.training.trainer.train`: its settings,
its metrics allreduce, clipping), timed per step by a callback; `ddp` = benchmarks/ddp_loop.py
(torch.distributed Gloo + DistributedDataParallel); every configuration is described at
benchmarks.workload's TRAIN_CONFIGS. Each rank is pinned to an equal share of the cores (1 core
per rank with 2 ranks on 2 cores; the 1-rank runs also get 1 core). Weak scaling fixes the per-rank
micro-batch, strong scaling the global batch. E(N) = tokens/s(N) / (N · tokens/s(1)) for weak,
speed-up / N for strong. Repeats interleave backends and N; figures are medians. The cost model
(benchmarks/costmodel.py) is fitted to a benchmarks.allreduce report (`--allreduce DIR`, else a
short allreduce measured now), takes its compute terms from these runs (`measured_compute`) and
the fusion-buffer copies from a Horovod timeline (`--timeline`), and is compared with the
measurements. --device cuda: one GPU per rank (hvdlm's mapping), NCCL for Horovod and DDP
alike, both fp32 and eager (benchmarks.workload.hvdlm_overrides); the cost model is then
fitted to an NCCL allreduce (`--allreduce` from `benchmarks.allreduce --device cuda`, else
measured now on the GPUs). Writes DIR/report.json (`runs`, `model`, `timeline`, `settings`,
`machine`), DIR/report.md and, with matplotlib, efficiency_*.png, tokens_per_s_*.png and
predicted_networks.png. The committed report of this machine is docs/scaling/report.md (with
docs/scaling/NOTES.md).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from benchmarks import allreduce, costmodel, report
from benchmarks.harness import Launch, add_common, cores_per_rank, emulated_hosts, split_config
from benchmarks.timeline import summarise_timeline
from benchmarks.workload import BLOCK, MODEL, TRAIN_CONFIGS, grad_bytes, make_dataset, one_run

COPY_ACTIVITIES = ("MEMCPY_IN_FUSION_BUFFER", "MEMCPY_OUT_FUSION_BUFFER")  # in the timeline
ALLREDUCE_SIZES = (64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20)  # fit without --allreduce


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


BACKEND_CONFIG = {"horovod": "hvdlm", "ddp": "ddp"}  # the config each backend name means


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


def measure(args: argparse.Namespace, data: Path, launch: Launch) -> list[Run]:
    items = plan(args)
    share = cores_per_rank(max(n for _, _, n, _ in items))  # the 1-rank runs get one share too
    got: dict[tuple, list[dict[str, float]]] = {item: [] for item in items}
    with tempfile.TemporaryDirectory(prefix="hvdlm-scaling-", dir=launch.tmp) as tmp:
        for rnd in range(args.repeats):
            for item in items if rnd % 2 == 0 else items[::-1]:
                config, _, n, mb = item
                got[item].append(one_run(config, n, mb, data, args.steps, Path(tmp), share,
                                         launch))
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
        backend = {"ddp": "ddp", "nocomm": "none"}.get(split_config(config, TRAIN_CONFIGS)[0],
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


# ---------------------------------------------------------------- the cost model, fitted

def cost_model(runs: list[Run], args: argparse.Namespace, gbytes: int, timeline: dict | None,
               launch: Launch) -> dict:
    """Fit α, β (from --allreduce, else a short measurement now) and predict E(N)."""
    nmax = max(r.np for r in runs)
    if args.allreduce:
        fit = costmodel.fit_report(Path(args.allreduce))
    else:
        rows, _ = allreduce.measure(["hvdlm"], max(2, nmax), list(ALLREDUCE_SIZES), 10, 1,
                                    launch)
        fit = costmodel.fit((r.np, r.bytes, r.time_s) for r in rows)
    weak = {r.np: r for r in runs if r.mode == "weak" and r.config == "hvdlm"}
    if 1 not in weak:
        return {}
    compute = measured_compute(runs, weak[1], timeline, gbytes)

    def efficiencies(c: costmodel.Compute) -> dict[str, float]:
        return {str(n): costmodel.efficiency(n, c, gbytes, fit, args.overlap)
                for n in costmodel.PREDICT_N}

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
            "predicted_efficiency_comm_only": efficiencies(costmodel.Compute(compute.seconds)),
            "measured_efficiency": measured,
            "prediction_error": {n: predicted[n] / e - 1 for n, e in measured.items()
                                 if n in predicted},
            "implied_overlap": {str(n): costmodel.measured_overlap(
                compute, r.step_time_s, n, gbytes, fit) for n, r in weak.items() if n > 1},
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
    ms = (timeline or {}).get("ms_per_step", {})
    copy = sum(ms.get(k, 0.0) for k in COPY_ACTIVITIES) / 1e3 / gbytes
    for config in ("hvdlm-nograds", "nocomm"):
        without = {r.np: r for r in runs if r.mode == "weak" and r.config == config}
        if max(without, default=1) > 1:
            largest = without[max(without)]
            return costmodel.Compute(solo.step_time_s, min(1.0, largest.efficiency),
                                     largest.relative_step_times, copy, config)
    return costmodel.Compute(solo.step_time_s, 1.0, solo.relative_step_times, copy, "hvdlm")


# ---------------------------------------------------------------- the report

def write_report(out: Path, runs: list[Run], model: dict, args: argparse.Namespace,
                 timeline: dict | None) -> None:
    payload = {"runs": [asdict(r) for r in runs], "model": model, "timeline": timeline,
               "settings": {"model": MODEL, "steps": args.steps, "repeats": args.repeats,
                            "micro_batch": args.micro_batch, "global_batch": args.global_batch,
                            "hosts": args.hosts, "rate": args.rate, "delay": args.delay,
                            "nice": args.nice, **({"device": "cuda"} if
                                                  getattr(args, "device", "cpu") == "cuda"
                                                  else {})},
               "machine": report.machine_info()}
    sections = [("Measured", runs_section(runs, args)), *model_sections(model)]
    if timeline:
        sections.append(("Horovod timeline", timeline_section(timeline)))
    report.write(out, payload, "Scaling: hvdlm (Horovod) vs DDP", sections, figures(runs, model))


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


def model_sections(model: dict) -> list[tuple[str, str]]:
    """The cost model's part: its fit, the check against measurement, predictions, assumptions."""
    if not model:
        return []
    check = "; ".join(f"N={n}: predicted {model['predicted_efficiency'][n]:.3f}, measured "
                      f"{e:.3f} ({model['prediction_error'][n]:+.1%})"
                      for n, e in model["measured_efficiency"].items()
                      if n in model["predicted_efficiency"])
    comm_only = model["predicted_efficiency_comm_only"]
    fit = (f"Ring allreduce fitted to hvdlm's allreduce times: α = {model['alpha_s'] * 1e6:.0f} µs "
           f"per ring step, β = {model['beta_s_per_byte'] * 1e9:.2f} s/GB (worst fit error "
           f"{model['fit_max_rel_error']:.0%}); compute c = 1-rank step "
           f"{model['compute_s'] * 1e3:.1f} ms, of which each rank keeps s = "
           f"{model['shared_throughput']:.3f} at N ranks before any gradient moves (measured on "
           f"`{model['compute_source']}`), and waits for the slowest rank: straggler factor "
           f"m(2) = {model['straggler_factor']['2']:.3f}, "
           f"m(512) = {model['straggler_factor']['512']:.3f}; gradients G = "
           f"{model['grad_bytes'] / 2**20:.2f} MiB; fusion-buffer copies γ·G = "
           f"{model['copy_s_per_byte'] * model['grad_bytes'] * 1e3:.2f} ms; "
           f"h = {model['overlap']:g}.\n\n"
           f"Prediction against measurement: {check or '-'}. From the ring allreduce alone "
           "the model would predict "
           + ", ".join(f"N={n}: {comm_only[n]:.3f}" for n in model["measured_efficiency"]
                       if n in comm_only)
           + " (without s, m and the copies). Overlap implied by the measurement "
           "(informative, not used): "
           + ", ".join(f"N={n}: {h:.2f}" for n, h in model["implied_overlap"].items()) + ".")
    nets = model["networks"]
    pred = (f"Weak-scaling efficiency for a {nets['model_params'] / 1e6:.2f}M-parameter model "
            f"with c = {nets['compute_s'] * 1e3:.1f} ms per step:\n\n"
            + costmodel.network_table(nets)
            + "\n\n![efficiency](efficiency_weak.png) ![networks](predicted_networks.png)")
    return [("Cost model", fit), ("Predictions", pred), ("Assumptions", model["assumptions"])]


def timeline_section(tl: dict) -> str:
    rows = [(name, ms, tl["ops_per_step"][name], tl["tensor_events_per_step"][name])
            for name, ms in tl["ms_per_step"].items()]
    return ("Wall time per training step in each Horovod activity (spans of all tensors merged; "
            "it overlaps with compute), from HOROVOD_TIMELINE of rank 0 over "
            f"{tl['steps']} steps (start-up included):\n\n"
            + report.md_table(["activity", "ms/step", "operations/step", "tensor events/step"],
                              rows))


def figures(runs: list[Run], model: dict) -> list[report.Figure]:
    out = []
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
        out += [report.Figure(f"efficiency_{mode}.png", f"{mode} scaling efficiency", "ranks N",
                              "efficiency", eff, {"hvdlm, cost model": "--"}, logx=True),
                report.Figure(f"tokens_per_s_{mode}.png", f"{mode} scaling throughput",
                              "ranks N", "tokens/s", tps)]
    if model:
        nets = {name: ([int(n) for n in v["efficiency"]], list(v["efficiency"].values()))
                for name, v in model["networks"].items() if isinstance(v, dict)}
        out.append(report.Figure(
            "predicted_networks.png", f"cost model, {model['networks']['model_params'] / 1e6:.1f}M "
            "parameters, weak scaling", "ranks N", "predicted efficiency", nets, logx=True))
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
    p.add_argument("--timeline", action="store_true",
                   help="record and summarise a Horovod timeline")
    p.add_argument("--predict-params", type=float, help="cost model: parameters of the model to "
                   "predict for on the named networks (default: the benchmark's GPT)")
    p.add_argument("--predict-compute-s", type=float, help="cost model: its 1-rank step time "
                   "(default: this machine's, scaled by parameters)")
    p.add_argument("--overlap", type=float, default=0.0, help="cost model: hidden fraction h")
    add_common(p, device=True)
    p.add_argument("--hosts", type=int, default=0, help="emulated hosts (root; see scripts/)")
    p.add_argument("--rate", default="1gbit")
    p.add_argument("--delay", default="0ms")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    launch = Launch.from_args(args)
    for config, _, _, _ in plan(args):
        split_config(config, TRAIN_CONFIGS)  # unknown names fail before any rank starts
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else make_dataset(out)
    with emulated_hosts("benchmarks.scaling", args.hosts, args.rate, args.delay):
        runs = measure(args, data, launch)
        timeline = record_timeline(data, args, launch) if args.timeline else None
        # Without --allreduce the model measures the allreduce now: on the same hosts.
        model = cost_model(runs, args, grad_bytes(data), timeline, launch)
    write_report(out, runs, model, args, timeline)
    for r in runs:
        print(f"{r.backend:8s} {r.config:14s} {r.mode:6s} np={r.np} {r.tokens_per_s:10,.0f} "
              f"tokens/s  step {r.step_time_s * 1e3:7.1f} ms  efficiency {r.efficiency:.3f}")
    print(f"report: {out / 'report.md'}")
    return 0


def record_timeline(data: Path, args: argparse.Namespace, launch: Launch) -> dict:
    """hvdlm at the largest N with HOROVOD_TIMELINE; time per activity, summed over tensors."""
    n = max(int(x) for x in args.np.split(","))
    with tempfile.TemporaryDirectory(prefix="hvdlm-tl-", dir=launch.tmp) as tmp:
        path = Path(tmp, "timeline.json")
        one_run(f"hvdlm+HOROVOD_TIMELINE={path}", n, args.micro_batch, data, 10, Path(tmp),
                cores_per_rank(n), launch)
        return summarise_timeline(path, steps=BLOCK + 10)


if __name__ == "__main__":
    sys.exit(main())
