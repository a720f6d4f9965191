"""The cost model checked on emulated hosts: predicted against measured (root).

    sudo .venv/bin/python -m benchmarks.emulated --out docs/scaling/emulated
    sudo .venv/bin/python -m benchmarks.emulated --out DIR --hosts 2,3,4 \
        --rates 100mbit,1gbit,10gbit --sizes 1M,4M,16M [--no-scaling]
    .venv/bin/python -m benchmarks.emulated --out DIR --reanalyse   (refit, no measuring)

For each host count N and link rate R, tests/infra/emulate-cluster.sh brings up N hosts whose
egress is shaped to R (tbf); hvdlm's Horovod allreduce is timed across them (one rank per
host), then hvdlm.train steps (weak scaling, the benchmark GPT). The model is
benchmarks.costmodel's `Roofline` (link fitted on --calibrate at 2 hosts, host ceiling on the
unshaped runs) with t(N) = c₁·⌈N/cores⌉ + T(N, G) + T(N, 16 B) + o, o fitted on the
calibration setting too. Delay cannot be emulated here (no netem in this kernel). Writes
DIR/report.json (`allreduce`, `scaling`, `verdict` per setting, `model`, `machine`),
DIR/report.md and, with matplotlib, allreduce_error.png and efficiency.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from benchmarks import allreduce, report
from benchmarks.costmodel import (ROOFLINE_ASSUMPTIONS, UNSHAPED, Roofline, Setting, calibrate,
                                  fit_overhead, rate_bits)
from benchmarks.harness import Launch, cores_per_rank, emulated_cluster
from benchmarks.workload import MODEL, grad_bytes, make_dataset, one_run

TOLERANCE = 0.20  # the bar: predictions within 20% of measurements


@dataclass
class Measured:
    allreduce: dict[Setting, dict[int, float]] = field(default_factory=dict)
    steps: dict[Setting, float] = field(default_factory=dict)
    compute: dict[Setting, float] = field(default_factory=dict)  # paired 1-rank step times
    compute_s: float = math.nan  # c₁: their median
    command: str = ""
    load: dict[str, float] = field(default_factory=dict)  # 1-min load average per setting
    seconds: float = 0.0


def wire_s(st: Setting, size: int) -> float:
    """Line-rate time of one ring allreduce of `size` bytes (0 unshaped)."""
    return 2 * (st.hosts - 1) / st.hosts * size * 8 / st.bits_per_s


def iters_for(st: Setting, size: int, iters: int, budget_s: float = 6.0) -> int:
    """Fewer timed calls on slow links: the largest size's loop stays near `budget_s`."""
    wire = wire_s(st, size)
    return max(3, min(iters, int(budget_s / wire))) if wire else iters


def measure_allreduce(st: Setting, sizes: list[int], iters: int, nice: int) -> dict[int, float]:
    """Median time per size of hvdlm's allreduce, one rank per emulated host."""
    rows, _ = allreduce.measure(["hvdlm"], st.hosts, sizes, iters_for(st, max(sizes), iters), 1,
                                Launch(hosts=st.hosts, nice=nice))
    return {r.bytes: r.time_s for r in rows}


def measure_step(n: int, hosts: int, data: Path, args: argparse.Namespace, tmp: Path,
                 steps: int) -> float:
    """Step time (s) of hvdlm's trainer with n ranks (per-rank micro-batch fixed): the median
    over blocks of steps (benchmarks.workload.BLOCK), so a short burst of other load moves it
    little."""
    share = cores_per_rank(max(args.hosts))  # the 1-rank run gets one rank's share
    got = one_run("hvdlm", n, args.micro_batch, data, steps, tmp, share,
                  Launch(hosts=hosts, nice=args.nice))
    return n * args.micro_batch * MODEL["seq_len"] / got["tokens_per_s"]


def plan(args: argparse.Namespace, cal: Setting) -> list[Setting]:
    """Every (N, rate), the unshaped host ceiling and the calibration included; grouped by N,
    so `up` only re-shapes the links between settings of one N."""
    rates = list(dict.fromkeys([*args.rates, UNSHAPED]))
    todo = {Setting(n, r) for n in args.hosts for r in rates} | {cal, Setting(cal.hosts, UNSHAPED)}
    return sorted(todo, key=lambda s: (s.hosts, s.rate != UNSHAPED, s.bits_per_s))


def wire_bound(st: Setting, args: argparse.Namespace) -> bool:
    """The largest size takes >= 50 ms at line rate: the link sets the pace, steadily."""
    return wire_s(st, max(args.sizes)) >= 0.05


def passes(args: argparse.Namespace, cal: Setting) -> Iterator[tuple[int, Setting]]:
    """(pass, setting) in run order: per host count, `--rounds` passes over its rates. Host-
    bound settings swing with the machine's load and get every pass; wire-bound ones are
    steady and run once (the calibration setting gets every pass)."""
    todo = plan(args, cal)
    for n in dict.fromkeys(st.hosts for st in todo):
        for rnd in range(args.rounds):
            for st in todo:
                if st.hosts == n and (rnd == 0 or st == cal or not wire_bound(st, args)):
                    yield rnd, st


def sweep(args: argparse.Namespace, cal: Setting, data: Path | None) -> Measured:
    """Bring each setting up and measure it; the cluster is always taken down at the end.

    Allreduce times are the median over passes; training steps run once per setting (first
    pass), each right after a 1-rank run that gives its c₁.
    """
    got, start = Measured(), time.monotonic()
    runs: dict[Setting, list[dict[int, float]]] = {}
    with (emulated_cluster("benchmarks.emulated") as shape,
          tempfile.TemporaryDirectory(prefix="hvdlm-emu-") as tmp):
        for rnd, st in passes(args, cal):
            shape(st.hosts, st.rate)
            got.load.setdefault(st.label, round(os.getloadavg()[0], 2))
            runs.setdefault(st, []).append(measure_allreduce(st, args.sizes, args.iters,
                                                             args.nice))
            line = ", ".join(f"{s / 2**20:g} MiB {t * 1e3:.1f} ms" for s, t in runs[st][-1].items())
            if data and rnd == 0 and st.rate in args.rates and st.hosts in args.hosts:
                steps = args.steps // 3 if wire_s(st, max(args.sizes)) >= 0.5 else args.steps
                got.compute[st] = measure_step(1, st.hosts, data, args, Path(tmp), steps)
                got.steps[st] = measure_step(st.hosts, st.hosts, data, args, Path(tmp), steps)
                line += (f"; step {got.steps[st] * 1e3:.1f} ms, 1 rank "
                         f"{got.compute[st] * 1e3:.1f} ms")
            print(f"  {st.label} pass {rnd + 1}: {line}", flush=True)
    got.allreduce = {st: {s: report.median(r[s] for r in rs) for s in rs[0]}
                     for st, rs in runs.items()}
    got.seconds = time.monotonic() - start
    return got


def load_measured(path: Path) -> tuple[Measured, int]:
    """The measurements of an earlier report.json (for --reanalyse) and its gradient bytes."""
    old = json.loads(path.read_text())
    got = Measured(load=old["load_avg_1min"], seconds=old["seconds"], command=old["command"])
    for row in old["allreduce"]:
        got.allreduce.setdefault(Setting(row["hosts"], row["rate"]), {})[row["bytes"]] = \
            row["measured_s"]
    for row in old["scaling"]["runs"]:
        st = Setting(row["hosts"], row["rate"])
        got.steps[st], got.compute[st] = row["step_time_s"], row["compute_paired_s"]
    return got, old["scaling"]["grad_bytes"]


def measure_all(args: argparse.Namespace, cal: Setting) -> tuple[Measured, int]:
    """Run the sweep (the dataset for the training steps lives in a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="hvdlm-emu-data-") as tmp:
        data = None if args.no_scaling else make_dataset(Path(tmp))
        got = sweep(args, cal, data)
        got.command = " ".join(["python -m benchmarks.emulated", *args.argv])
        return got, grad_bytes(data) if data else 0


# ---------------------------------------------------------------- the model, checked

@dataclass
class Check:
    hosts: int
    rate: str
    bytes: int
    measured_s: float
    predicted_s: float
    error: float  # predicted / measured - 1
    role: str  # "link calibration", "host ceiling" or "prediction"
    bound: str  # which term of the max sets the prediction: "link" or "host"


def role_of(st: Setting, cal: Setting) -> str:
    if st == cal:
        return "link calibration"
    return "host ceiling" if st.rate == UNSHAPED else "prediction"


def compare(times: dict[Setting, dict[int, float]], model: Roofline,
            cal: Setting) -> list[Check]:
    out = []
    for st, sizes in times.items():
        for size, t in sorted(sizes.items()):
            pred = model.allreduce_s(st.hosts, size, st.rate)
            out.append(Check(st.hosts, st.rate, size, t, pred, pred / t - 1, role_of(st, cal),
                             model.bound(st.hosts, size, st.rate)))
    return out


@dataclass
class StepCheck:
    hosts: int
    rate: str
    step_time_s: float
    efficiency: float  # c₁ / t(N)
    predicted_step_s: float
    predicted_efficiency: float
    error: float  # of the efficiency: predicted / measured - 1
    role: str
    compute_paired_s: float  # the 1-rank run just before this one (information: load swings)


def fit_steps(steps: dict[Setting, float], compute: dict[Setting, float], grad_bytes: int,
              model: Roofline, cal: Setting) -> tuple[float, list[StepCheck]]:
    """c₁ = median of every 1-rank run (others' load comes and goes within seconds); the per-
    step overhead (Horovod's per-tensor negotiation and background thread on shared cores) is
    fitted on the calibration setting, as α and β are. Returns c₁ and one check per setting."""
    c1 = report.median(compute.values())
    if cal in steps:
        fit_overhead(model, cal, steps[cal], c1, grad_bytes)
    out = []
    for st, t in steps.items():
        pred = model.step_s(st.hosts, st.rate, c1, grad_bytes)
        eff, peff = c1 / t, c1 / pred
        out.append(StepCheck(st.hosts, st.rate, t, eff, pred, peff, peff / eff - 1,
                             role_of(st, cal), compute[st]))
    return c1, out


# ---------------------------------------------------------------- the report

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


def write_report(out: Path, got: Measured, model: Roofline, checks: list[Check],
                 steps: list[StepCheck], grad_bytes: int, args: argparse.Namespace) -> None:
    table = verdicts(checks, steps)
    payload = {"command": got.command,
               "sizes": args.sizes, "hosts": args.hosts, "rates": args.rates,
               "calibration": args.calibrate, "model": model.as_json(),
               "allreduce": [asdict(c) for c in checks],
               "scaling": {"grad_bytes": grad_bytes, "compute_s": got.compute_s,
                           "step_overhead_s": model.step_overhead_s,
                           "micro_batch": args.micro_batch, "steps": args.steps,
                           "runs": [asdict(s) for s in steps]},
               "verdict": table, "all_within_20pct": all(v["within_20pct"] for v in table),
               "load_avg_1min": got.load, "seconds": round(got.seconds, 1),
               "delay": "not emulated: this kernel has no netem qdisc",
               "assumptions": ROOFLINE_ASSUMPTIONS, "machine": report.machine_info()}
    report.write(out, payload, "Emulated hosts: the cost model, predicted against measured",
                 md_sections(got, model, checks, steps, table, grad_bytes, args),
                 figures(checks, steps))


def md_sections(got: Measured, model: Roofline, checks: list[Check], steps: list[StepCheck],
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
    busbw = model.link_busbw_gbps()
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
            ("Assumptions and limits", ROOFLINE_ASSUMPTIONS),
            ("Plots", "![allreduce error](allreduce_error.png) ![efficiency](efficiency.png)")]


def figures(checks: list[Check], steps: list[StepCheck]) -> list[report.Figure]:
    series, styles = {}, {}
    for rate in dict.fromkeys(c.rate for c in checks):
        mine = sorted((c.measured_s * 1e3, 1 + c.error) for c in checks if c.rate == rate)
        label = "unshaped" if rate == UNSHAPED else rate
        series[label], styles[label] = ([x for x, _ in mine], [y for _, y in mine]), "o"
    lo, hi = min(c.measured_s for c in checks) * 1e3, max(c.measured_s for c in checks) * 1e3
    for y, label in ((1 - TOLERANCE, "-20%"), (1.0, "exact"), (1 + TOLERANCE, "+20%")):
        series[label], styles[label] = ([lo, hi], [y, y]), "k-" if y == 1.0 else "k:"
    out = [report.Figure("allreduce_error.png", "ring-allreduce model on emulated hosts (all "
                         "sizes, N = 2-4)", "measured allreduce time (ms)", "predicted / measured",
                         series, styles, logx=True)]
    series, styles = {}, {}
    for rate in dict.fromkeys(s.rate for s in steps):
        mine = sorted((s.hosts, s.efficiency, s.predicted_efficiency) for s in steps
                      if s.rate == rate)
        series[f"{rate} measured"] = ([n for n, _, _ in mine], [e for _, e, _ in mine])
        series[f"{rate} predicted"] = ([n for n, _, _ in mine], [p for _, _, p in mine])
        styles[f"{rate} predicted"] = "x--"
    if series:
        out.append(report.Figure("efficiency.png", "hvdlm.train on emulated hosts", "hosts N",
                                 "weak-scaling efficiency", series, styles))
    return out


# ---------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.emulated", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/scaling/emulated")
    p.add_argument("--hosts", default="2,3,4", help="host counts, e.g. 2,3,4")
    p.add_argument("--rates", default="100mbit,1gbit,10gbit",
                   help="link rates (tc units); unshaped (0) is always added: the host ceiling")
    p.add_argument("--sizes", default="1M,4M,16M", help="allreduce sizes")
    p.add_argument("--calibrate", default="1gbit",
                   help="the link rate α, β are fitted on (2 hosts)")
    p.add_argument("--iters", type=int, default=10,
                   help="timed allreduce calls (fewer on slow links)")
    p.add_argument("--rounds", type=int, default=5,
                   help="passes over each host count's host-bound settings (median)")
    p.add_argument("--steps", type=int, default=30,
                   help="timed training steps per run (a third on slow links)")
    p.add_argument("--micro-batch", type=int, default=12, help="per-rank micro-batch (weak)")
    p.add_argument("--no-scaling", action="store_true", help="allreduce only, no training steps")
    p.add_argument("--reanalyse", action="store_true",
                   help="no measuring: refit the model to OUT/report.json and rewrite the report")
    p.add_argument("--nice", type=int, default=-10, help="nice level of the ranks (root)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.hosts = sorted({int(n) for n in args.hosts.split(",")})
    args.rates = [r.strip() for r in args.rates.split(",") if r.strip()]
    args.sizes = [allreduce.parse_size(s) for s in args.sizes.split(",") if s]
    for rate in [*args.rates, args.calibrate]:
        rate_bits(rate)
    if min(args.hosts) < 2 or args.calibrate == UNSHAPED:
        p.error("--hosts must be >= 2 and --calibrate a shaped rate")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0 and not args.reanalyse:
        print("benchmarks.emulated: error: needs root (network namespaces); run it with sudo",
              file=sys.stderr)
        return 2
    cal = Setting(2, args.calibrate)
    if args.reanalyse:
        got, gbytes = load_measured(Path(args.out) / "report.json")
    else:
        got, gbytes = measure_all(args, cal)
    model = calibrate(got.allreduce, cal, len(os.sched_getaffinity(0)))
    checks = compare(got.allreduce, model, cal)
    got.compute_s, steps = (fit_steps(got.steps, got.compute, gbytes, model, cal)
                            if got.steps else (math.nan, []))
    write_report(Path(args.out), got, model, checks, steps, gbytes, args)
    for v in verdicts(checks, steps):
        eff = v["efficiency_error"]
        print(f"{v['setting']:18s} {v['role']:17s} allreduce worst "
              f"{v['allreduce_max_abs_error']:4.0%}"
              + (f", efficiency {eff:+.0%}" if eff is not None else "")
              + ("" if v["within_20pct"] else "  MISSES 20%"))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
