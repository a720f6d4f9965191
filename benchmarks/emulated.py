"""The ring-allreduce cost model checked on emulated hosts: predicted against measured (root).

    sudo .venv/bin/python -m benchmarks.emulated --out docs/scaling/emulated
    sudo .venv/bin/python -m benchmarks.emulated --out DIR --hosts 2,3,4 \
        --rates 100mbit,1gbit,10gbit --sizes 1M,4M,16M [--no-scaling]

For each host count N and link rate R, tests/infra/emulate-cluster.sh brings up N hosts whose
egress is shaped to R (tbf), and benchmarks.allreduce's worker times hvdlm's Horovod allreduce
across them (one rank per host, via hvdlm.launch's run_on_hosts); benchmarks.scaling's worker
then times hvdlm.train steps (weak scaling, the benchmark GPT). The model:

    T(N, S; R) = max(2(N-1)·α₁ + 2(N-1)/N·S·β₁·R₁/R,  2(N-1)·α_h(N) + 2(N-1)/N·S·β_h(N))
                     link                              host

α₁, β₁: the ring's latency and seconds per byte fitted with benchmarks.costmodel.fit on ONE
link setting (R₁ = --calibrate, 2 hosts); β scales as 1/rate, and a ring sends 2(N-1)/N·S bytes
per rank over its own egress, so per-link β does not depend on N. α_h(N), β_h(N): the machine's
own latency and copy/reduce cost with N ranks, fitted on the unshaped runs (rate 0): emulated
hosts share this machine's cores, so unlike real nodes this ceiling depends on N. The max is a
roofline: TCP moves bytes while the CPU reduces, so the slower of link and host sets the pace.
A weak-scaling step is t(N) = c₁·⌈N/cores⌉ + T(N, G) + T(N, 16 B) + o (compute shared by ranks
pinned one core each, the gradient allreduce not hidden, one metrics allreduce, and a per-step
overhead o fitted on the calibration setting too); E(N) = c₁ / t(N), c₁ the median 1-rank step
time. Delay cannot be emulated here (no netem in this kernel); a delay d would add to α₁.
The model is benchmarks/emulated_model.py. Writes DIR/report.json, DIR/report.md and, with
matplotlib, DIR/allreduce_error.png and DIR/efficiency.png (benchmarks/emulated_report.py);
the committed report is docs/scaling/emulated/report.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

from benchmarks import allreduce, report
from benchmarks.emulated_model import (UNSHAPED, Measured, Setting, calibrate, compare, fit_steps,
                                       rate_bits)
from benchmarks.emulated_report import verdicts, write_report
from benchmarks.harness import NICE_ENV, cores_per_rank, emulated_cluster
from benchmarks.workload import MODEL, grad_bytes, make_dataset, one_run


def wire_s(st: Setting, size: int) -> float:
    """Line-rate time of one ring allreduce of `size` bytes (0 unshaped)."""
    return 2 * (st.hosts - 1) / st.hosts * size * 8 / st.bits_per_s


def iters_for(st: Setting, size: int, iters: int, budget_s: float = 6.0) -> int:
    """Fewer timed calls on slow links: the largest size's loop stays near `budget_s`."""
    wire = wire_s(st, size)
    return max(3, min(iters, int(budget_s / wire))) if wire else iters


def measure_allreduce(st: Setting, sizes: list[int], iters: int) -> dict[int, float]:
    """Median time per size of hvdlm's allreduce, one rank per emulated host."""
    rows, _ = allreduce.measure(["hvdlm"], st.hosts, sizes, iters_for(st, max(sizes), iters), 1,
                                hosts=st.hosts)
    return {r.bytes: r.time_s for r in rows}


def measure_step(n: int, hosts: int, data: Path, args: argparse.Namespace, tmp: Path,
                 steps: int) -> float:
    """Step time (s) of hvdlm's trainer with n ranks (per-rank micro-batch fixed): the median
    over blocks of steps (benchmarks.workload.BLOCK), so a short burst of other load moves it
    little."""
    share = cores_per_rank(max(args.hosts))  # the 1-rank run gets one rank's share
    got = one_run("hvdlm", n, args.micro_batch, data, steps, hosts, tmp, share)
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
            runs.setdefault(st, []).append(measure_allreduce(st, args.sizes, args.iters))
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
    if args.nice:
        os.environ[NICE_ENV] = str(args.nice)
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
