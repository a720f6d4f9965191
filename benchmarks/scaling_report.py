"""benchmarks.scaling's report: DIR/report.json, DIR/report.md and the plots.

report.json: `runs` (one per configuration, mode and N: tokens/s, step time, efficiency and
the rounds' spread), `model` (benchmarks/scaling_model.py's fit and predictions), `timeline`
(with --timeline), `settings`, `machine`. report.md: the same as tables. With matplotlib
(`pip install 'hvdlm[bench]'`): efficiency_{weak,strong}.png, tokens_per_s_{weak,strong}.png,
predicted_networks.png.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from benchmarks import report
from benchmarks.costmodel import markdown_sections
from benchmarks.scaling_model import Run
from benchmarks.workload import BLOCK, MODEL


def write_report(out: Path, runs: list[Run], model: dict, args: argparse.Namespace,
                 timeline: dict | None) -> None:
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
