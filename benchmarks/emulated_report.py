"""The report of benchmarks.emulated: JSON, Markdown and plots of predicted against measured.

    sudo .venv/bin/python -m benchmarks.emulated --out docs/scaling/emulated

DIR/report.json: `allreduce` (one row per setting and size: measured_s, predicted_s, error,
role, bound), `scaling` (one row per setting: step time, efficiency, both predicted), `verdict`
(per setting: worst error, within 20%?), `model` (the fitted α, β), `machine`, load per setting.
DIR/report.md: the same as tables; with matplotlib (`pip install 'hvdlm[bench]'`)
DIR/allreduce_error.png, DIR/efficiency.png.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from benchmarks import report
from benchmarks.emulated_model import (TOLERANCE, UNSHAPED, Check, Measured, Model, Setting,
                                       StepCheck, rate_bits)

ASSUMPTIONS = (
    "One rank per emulated host, one flat ring (Gloo); the link's α and β come from the one "
    "link calibration, β scaled as 1/rate; the host ceiling α_h(N), β_h(N) comes from the "
    "unshaped runs (the emulated hosts share this machine's cores, so it depends on N; on real "
    "nodes it would not); the slower of link and host sets the time (a roofline, not a sum: "
    "the wire moves bytes while the CPU reduces); tbf's burst (1 ms of traffic, >= 64 KiB) is "
    "not modelled (it is part of the fitted β); compute per rank is the median 1-rank step "
    "time c₁, times ⌈N/cores⌉ because ranks are pinned one core each; the gradient allreduce "
    "is not hidden behind the backward pass (h = 0); one 16-byte metrics allreduce per step; "
    "a constant per-step overhead o (Horovod's per-tensor negotiation and its background "
    "thread on the rank's only core), fitted on the calibration setting like α and β. No "
    "delay was emulated: this kernel has no netem qdisc (`--delay` fails); link latency would "
    "add to α, and only the software α measured here is in the model.")


def verdicts(checks: list[Check], steps: list[StepCheck]) -> list[dict]:
    """Per setting: worst allreduce error over sizes, efficiency error, within 20%?"""
    out = []
    for key in dict.fromkeys((c.hosts, c.rate) for c in checks):
        mine = [c for c in checks if (c.hosts, c.rate) == key]
        step = next((s for s in steps if (s.hosts, s.rate) == key), None)
        worst = max(abs(c.error) for c in mine)
        ok = worst <= TOLERANCE and (step is None or abs(step.error) <= TOLERANCE)
        out.append({"setting": Setting(*key).label, "hosts": key[0], "rate": key[1],
                    "role": mine[0].role, "bound": mine[-1].bound,
                    "allreduce_max_abs_error": worst,
                    "efficiency_error": step.error if step else None, "within_20pct": ok})
    return out


def link_busbw_gbps(model: Model) -> float | None:
    """The link's fitted bus bandwidth; None when the fit found no bandwidth term (β = 0, as
    tiny message sizes in noisy runs can give)."""
    beta = model.link_beta_s_per_byte
    return 1e-9 / beta if beta > 0 else None


def model_json(model: Model) -> dict:
    return {"link": {"rate": model.link_rate, "alpha_s": model.link_alpha_s,
                     "beta_s_per_byte": model.link_beta_s_per_byte,
                     "fit_max_rel_error": model.link_fit_error,
                     "busbw_gbps": link_busbw_gbps(model)},
            "host": {str(n): asdict(f) for n, f in sorted(model.host.items())},
            "cores": model.cores}


def write_report(out: Path, got: Measured, model: Model, checks: list[Check],
                 steps: list[StepCheck], grad_bytes: int, args: argparse.Namespace) -> None:
    machine = report.machine_info()
    table = verdicts(checks, steps)
    payload = {"command": got.command,
               "sizes": args.sizes, "hosts": args.hosts, "rates": args.rates,
               "calibration": args.calibrate, "model": model_json(model),
               "allreduce": [asdict(c) for c in checks],
               "scaling": {"grad_bytes": grad_bytes, "compute_s": got.compute_s,
                           "step_overhead_s": model.step_overhead_s,
                           "micro_batch": args.micro_batch, "steps": args.steps,
                           "runs": [asdict(s) for s in steps]},
               "verdict": table, "all_within_20pct": all(v["within_20pct"] for v in table),
               "load_avg_1min": got.load, "seconds": round(got.seconds, 1),
               "delay": "not emulated: this kernel has no netem qdisc",
               "assumptions": ASSUMPTIONS, "machine": machine}
    report.write_json(out, payload)
    report.write_md(out, "Emulated hosts: the cost model, predicted against measured",
                    md_sections(got, model, checks, steps, table, grad_bytes, args), machine)
    plots(out, checks, steps)


def md_sections(got: Measured, model: Model, checks: list[Check], steps: list[StepCheck],
                table: list[dict], grad_bytes: int, args: argparse.Namespace) -> list:
    ms = lambda s: s * 1e3  # noqa: E731
    host = ", ".join(f"N={n}: α {ms(f.alpha_s):.2f} ms, β {f.beta_s_per_byte * 1e9:.2f} s/GB"
                     for n, f in sorted(model.host.items()))
    setup = (f"`{got.command}`: one rank per "
             f"emulated host (network namespaces on a bridge, egress shaped with tbf), hvdlm's "
             f"Horovod settings, in-place float32 allreduce, median of up to {args.iters} calls "
             f"after warm-up. {len(got.allreduce)} settings in {got.seconds:.0f} s; 1-min load "
             f"average per setting {min(got.load.values()):.1f}-{max(got.load.values()):.1f} on "
             f"{model.cores} cores, the benchmark's own ranks included.")
    busbw = link_busbw_gbps(model)
    bandwidth = ("no bandwidth term found" if busbw is None else
                 f"bus bandwidth {busbw:.3f} GB/s, {busbw * 8e9 / rate_bits(model.link_rate):.0%}"
                 " of line rate")
    fit = (f"Link, fitted on {model.link_rate} x 2 hosts: α {ms(model.link_alpha_s):.2f} ms, "
           f"β {model.link_beta_s_per_byte * 1e9:.2f} s/GB ({bandwidth}; "
           f"fit error ≤ {model.link_fit_error:.0%}). Host ceiling (unshaped): {host}.")
    ar = report.md_table(["setting", "MiB", "measured ms", "predicted ms", "error", "bound by",
                          "role"],
                         [(Setting(c.hosts, c.rate).label, c.bytes / 2**20, ms(c.measured_s),
                           ms(c.predicted_s), f"{c.error:+.0%}", c.bound, c.role) for c in checks])
    sc = report.md_table(["setting", "role", "step ms", "efficiency", "predicted step ms",
                          "predicted efficiency", "error", "1-rank ms just before"],
                         [(Setting(s.hosts, s.rate).label, s.role, ms(s.step_time_s),
                           s.efficiency,
                           ms(s.predicted_step_s), s.predicted_efficiency, f"{s.error:+.0%}",
                           ms(s.compute_paired_s))
                          for s in steps])
    sc_text = (f"hvdlm.train, weak scaling, micro-batch {args.micro_batch} per rank, "
               f"gradients {grad_bytes / 2**20:.2f} MiB; c₁ = {ms(got.compute_s):.1f} ms, the "
               f"median of the 1-rank runs (one before each setting; they ranged "
               f"{ms(min(got.compute.values())):.0f}-{ms(max(got.compute.values())):.0f} ms as "
               f"others' jobs came and went); per-step overhead o = "
               f"{ms(model.step_overhead_s):.1f} ms, fitted on the calibration setting; "
               f"E = c₁ / t(N), so N ranks sharing {model.cores} cores count against it."
               f"\n\n{sc}"
               if steps else "not measured")
    vt = report.md_table(["setting", "role", "bound by", "worst allreduce error",
                          "efficiency error", "within 20%"],
                         [(v["setting"], v["role"], v["bound"],
                           f"{v['allreduce_max_abs_error']:.0%}",
                           "-" if v["efficiency_error"] is None
                           else f"{v['efficiency_error']:+.0%}",
                           "yes" if v["within_20pct"] else "**no**") for v in table])
    return [("Setup", setup), ("Model", fit), ("Verdict per setting", vt),
            ("Allreduce: predicted against measured", ar), ("Weak scaling", sc_text),
            ("Assumptions and limits", ASSUMPTIONS),
            ("Plots", "![allreduce error](allreduce_error.png) ![efficiency](efficiency.png)")]


def plots(out: Path, checks: list[Check], steps: list[StepCheck]) -> None:
    series, styles = {}, {}
    for rate in dict.fromkeys(c.rate for c in checks):
        mine = sorted((c.measured_s * 1e3, 1 + c.error) for c in checks if c.rate == rate)
        label = "unshaped" if rate == UNSHAPED else rate
        series[label], styles[label] = ([x for x, _ in mine], [y for _, y in mine]), "o"
    lo, hi = min(c.measured_s for c in checks) * 1e3, max(c.measured_s for c in checks) * 1e3
    for y, label in ((1 - TOLERANCE, "-20%"), (1.0, "exact"), (1 + TOLERANCE, "+20%")):
        series[label], styles[label] = ([lo, hi], [y, y]), "k-" if y == 1.0 else "k:"
    report.line_plot(out / "allreduce_error.png", series, styles=styles, logx=True,
                     xlabel="measured allreduce time (ms)", ylabel="predicted / measured",
                     title="ring-allreduce model on emulated hosts (all sizes, N = 2-4)")
    series, styles = {}, {}
    for rate in dict.fromkeys(s.rate for s in steps):
        mine = sorted((s.hosts, s.efficiency, s.predicted_efficiency) for s in steps
                      if s.rate == rate)
        series[f"{rate} measured"] = ([n for n, _, _ in mine], [e for _, e, _ in mine])
        series[f"{rate} predicted"] = ([n for n, _, _ in mine], [p for _, _, p in mine])
        styles[f"{rate} predicted"] = "x--"
    if series:
        report.line_plot(out / "efficiency.png", series, styles=styles, xlabel="hosts N",
                         ylabel="weak-scaling efficiency", title="hvdlm.train on emulated hosts")
