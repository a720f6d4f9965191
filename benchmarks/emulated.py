"""The ring-allreduce cost model checked on emulated hosts: predicted against measured (root).

    sudo .venv/bin/python -m benchmarks.emulated --out docs/scaling/emulated
    sudo .venv/bin/python -m benchmarks.emulated --out DIR --hosts 2,3,4 \
        --rates 100mbit,1gbit,10gbit --sizes 1M,4M,16M [--no-scaling]

For each host count N and link rate R, scripts/emulate-cluster.sh brings up N hosts whose
egress is shaped to R (tbf), and benchmarks.allreduce's worker times hvdlm's Horovod allreduce
across them (one rank per host, via hvdlm.launch's run_on_hosts); benchmarks.scaling's worker
then times hvdlm.train steps (weak scaling, the benchmark GPT). The model:

    T(N, S; R) = 2(N-1)·α(N) + 2(N-1)/N · S · max(β_link(R), β_host(N))

β_link(R) = β₁·(R₁/R): the link's seconds per byte, fitted with benchmarks.costmodel.fit on
ONE link setting (R₁ = --calibrate, 2 hosts); a ring sends 2(N-1)/N·S bytes per rank over its
own egress, so per-link β does not depend on N. α(N), β_host(N): the machine's own latency and
copy/reduce cost with N ranks, fitted on the unshaped runs (rate 0): the emulated hosts share
this machine's cores, so unlike real nodes this ceiling depends on N. The max is a roofline:
TCP moves bytes while the CPU reduces, so the slower of link and host sets the pace. A weak-
scaling step is t(N) = c₁·⌈N/cores⌉ + T(N, G) + T(N, 16 B) (compute shared by ranks pinned one
core each, the gradient allreduce not hidden, one metrics allreduce); E(N) = c₁ / t(N).
Delay cannot be emulated here (no netem in this kernel); it would add d to α.
Writes DIR/report.json, DIR/report.md, DIR/allreduce_error.png, DIR/efficiency.png.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from benchmarks import allreduce, costmodel, report

TOLERANCE = 0.20  # the bar: predictions within 20% of measurements
UNSHAPED = "0"


@dataclass(frozen=True)
class Setting:
    hosts: int
    rate: str  # tc units (100mbit, 1gbit); "0" = unshaped

    @property
    def bits_per_s(self) -> float:
        return rate_bits(self.rate)

    @property
    def label(self) -> str:
        return f"{'unshaped' if self.rate == UNSHAPED else self.rate} x {self.hosts}"


def rate_bits(rate: str) -> float:
    """100mbit -> 1e8 bit/s; "0" (unshaped) -> inf."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12, "bit": 1.0}
    if rate == UNSHAPED:
        return math.inf
    for unit, scale in units.items():
        if rate.endswith(unit):
            return float(rate[:-len(unit)]) * scale
    raise SystemExit(f"bad rate {rate!r}: use e.g. 100mbit, 1gbit, 10gbit or 0 (unshaped)")


# ---------------------------------------------------------------- the model

@dataclass
class Model:
    """α-β ring allreduce with a link term (one calibration) and a host ceiling per N."""
    link_alpha_s: float
    link_beta_s_per_byte: float  # at link_rate
    link_rate: str
    link_fit_error: float
    host: dict[int, costmodel.Fit] = field(default_factory=dict)  # N -> unshaped fit
    cores: int = 1

    def beta_link(self, rate: str) -> float:
        return self.link_beta_s_per_byte * rate_bits(self.link_rate) / rate_bits(rate)

    def host_fit(self, n: int) -> costmodel.Fit:
        """The unshaped fit at N, else the nearest measured N (a stated extrapolation)."""
        return self.host[n] if n in self.host else self.host[min(self.host, key=lambda k: abs(k - n))]

    def allreduce_s(self, n: int, size: float, rate: str) -> float:
        host = self.host_fit(n)
        beta = max(self.beta_link(rate), host.beta_s_per_byte)
        return costmodel.ring_time(n, size, host.alpha_s, beta)

    def step_s(self, n: int, rate: str, compute_s: float, grad_bytes: float) -> float:
        share = math.ceil(n / self.cores)  # ranks per core: the slowest rank sets the pace
        return (compute_s * share + self.allreduce_s(n, grad_bytes, rate)
                + self.allreduce_s(n, 16, rate))


def calibrate(times: dict[Setting, dict[int, float]], cal: Setting, cores: int) -> Model:
    """Fit the link on `cal` and the host ceiling on every unshaped setting."""
    if cal not in times:
        raise SystemExit(f"the calibration setting {cal.label} was not measured")
    link = costmodel.fit((cal.hosts, s, t) for s, t in times[cal].items())
    host = {st.hosts: costmodel.fit((st.hosts, s, t) for s, t in sizes.items())
            for st, sizes in times.items() if st.rate == UNSHAPED}
    if not host:
        raise SystemExit("no unshaped (rate 0) setting measured: the host ceiling is unknown")
    return Model(link.alpha_s, link.beta_s_per_byte, cal.rate, link.max_rel_error, host, cores)


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


def compare(times: dict[Setting, dict[int, float]], model: Model, cal: Setting) -> list[Check]:
    out = []
    for st, sizes in times.items():
        for size, t in sorted(sizes.items()):
            pred = model.allreduce_s(st.hosts, size, st.rate)
            bound = ("link" if model.beta_link(st.rate) >= model.host_fit(st.hosts).beta_s_per_byte
                     else "host")
            out.append(Check(st.hosts, st.rate, size, t, pred, pred / t - 1, role_of(st, cal),
                             bound))
    return out


@dataclass
class StepCheck:
    hosts: int
    rate: str
    step_time_s: float
    efficiency: float
    predicted_step_s: float
    predicted_efficiency: float
    error: float  # of the efficiency: predicted / measured - 1


def compare_steps(steps: dict[Setting, float], compute_s: float, grad_bytes: int,
                  model: Model) -> list[StepCheck]:
    out = []
    for st, t in steps.items():
        pred = model.step_s(st.hosts, st.rate, compute_s, grad_bytes)
        eff, peff = compute_s / t, compute_s / pred
        out.append(StepCheck(st.hosts, st.rate, t, eff, pred, peff, peff / eff - 1))
    return out


# ---------------------------------------------------------------- measuring

def iters_for(st: Setting, size: int, iters: int, budget_s: float = 6.0) -> int:
    """Fewer timed calls on slow links: the largest size's loop stays near `budget_s`."""
    wire_s = 2 * (st.hosts - 1) / st.hosts * size * 8 / st.bits_per_s
    return max(3, min(iters, int(budget_s / wire_s))) if wire_s else iters


def measure_allreduce(st: Setting, sizes: list[int], iters: int) -> dict[int, float]:
    """Median time per size of hvdlm's allreduce, one rank per emulated host."""
    rows, _ = allreduce.measure(["hvdlm"], st.hosts, sizes, iters_for(st, max(sizes), iters), 1,
                                hosts=st.hosts)
    return {r.bytes: r.time_s for r in rows}


def measure_step(n: int, hosts: int, data: Path, args: argparse.Namespace, tmp: Path) -> float:
    """Median step time (s) of hvdlm.train with n ranks (per-rank micro-batch fixed)."""
    from benchmarks import scaling
    share = allreduce.cores_per_rank(max(args.hosts))  # the 1-rank run gets one rank's share
    got = scaling.one_run("hvdlm", n, args.micro_batch, data, args.steps, hosts, tmp, share)
    return n * args.micro_batch * scaling.MODEL["seq_len"] / got["tokens_per_s"]


def plan(args: argparse.Namespace, cal: Setting) -> list[Setting]:
    """Every (N, rate), the unshaped host ceiling and the calibration included; grouped by N,
    so `up` only re-shapes the links between settings of one N."""
    rates = list(dict.fromkeys([*args.rates, UNSHAPED]))
    todo = {Setting(n, r) for n in args.hosts for r in rates} | {cal, Setting(cal.hosts, UNSHAPED)}
    return sorted(todo, key=lambda s: (s.hosts, s.rate != UNSHAPED, s.bits_per_s))


@dataclass
class Measured:
    allreduce: dict[Setting, dict[int, float]] = field(default_factory=dict)
    steps: dict[Setting, float] = field(default_factory=dict)
    compute_s: float = math.nan  # 1-rank step time
    load: dict[str, float] = field(default_factory=dict)  # 1-min load average per setting
    seconds: float = 0.0


def sweep(args: argparse.Namespace, cal: Setting, data: Path | None) -> Measured:
    """Bring each setting up, measure it; the cluster is always taken down at the end."""
    got, start = Measured(), time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="hvdlm-emu-") as tmp:
            for st in plan(args, cal):
                allreduce.emulate("up", st.hosts, st.rate)
                got.load[st.label] = round(os.getloadavg()[0], 2)
                got.allreduce[st] = measure_allreduce(st, args.sizes, args.iters)
                if data and math.isnan(got.compute_s):
                    got.compute_s = measure_step(1, st.hosts, data, args, Path(tmp))
                    print(f"  1 rank: step {got.compute_s * 1e3:.1f} ms", flush=True)
                if data and st.rate in args.rates and st.hosts in args.hosts:
                    got.steps[st] = measure_step(st.hosts, st.hosts, data, args, Path(tmp))
                print(f"  {st.label}: " + ", ".join(
                    f"{s / 2**20:g} MiB {t * 1e3:.1f} ms" for s, t in got.allreduce[st].items())
                    + (f"; step {got.steps[st] * 1e3:.1f} ms" if st in got.steps else ""),
                    flush=True)
    finally:
        allreduce.emulate("down")
    got.seconds = time.monotonic() - start
    return got


# ---------------------------------------------------------------- the report

ASSUMPTIONS = (
    "One rank per emulated host, one flat ring (Gloo); per-link β scales as 1/rate from the "
    "one link calibration; α(N) and the host ceiling β_host(N) come from the unshaped runs "
    "(the emulated hosts share this machine's cores, so the ceiling depends on N; on real nodes "
    "it would not); the slower of link and host sets the bandwidth term (roofline, not a sum: "
    "the wire moves bytes while the CPU reduces); tbf's burst (1 ms of traffic, >= 64 KiB) is "
    "not modelled (it is part of the fitted β); compute per rank is the 1-rank step time, "
    "times ⌈N/cores⌉ because ranks are pinned one core each; the gradient allreduce is not "
    "hidden behind the backward pass (h = 0); one 16-byte metrics allreduce per step. No "
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


def model_json(model: Model) -> dict:
    return {"link": {"rate": model.link_rate, "alpha_s": model.link_alpha_s,
                     "beta_s_per_byte": model.link_beta_s_per_byte,
                     "fit_max_rel_error": model.link_fit_error,
                     "busbw_gbps": 1e-9 / model.link_beta_s_per_byte},
            "host": {str(n): asdict(f) for n, f in sorted(model.host.items())},
            "cores": model.cores}


def write_report(out: Path, got: Measured, model: Model, checks: list[Check],
                 steps: list[StepCheck], grad_bytes: int, args: argparse.Namespace) -> None:
    machine = report.machine_info()
    table = verdicts(checks, steps)
    payload = {"command": " ".join(["python -m benchmarks.emulated", *args.argv]),
               "sizes": args.sizes, "hosts": args.hosts, "rates": args.rates,
               "calibration": args.calibrate, "model": model_json(model),
               "allreduce": [asdict(c) for c in checks],
               "scaling": {"compute_s": got.compute_s, "grad_bytes": grad_bytes,
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
    setup = (f"`{' '.join(['python -m benchmarks.emulated', *args.argv])}`: one rank per "
             f"emulated host (network namespaces on a bridge, egress shaped with tbf), hvdlm's "
             f"Horovod settings, in-place float32 allreduce, median of up to {args.iters} calls "
             f"after warm-up. {len(got.allreduce)} settings in {got.seconds:.0f} s; 1-min load "
             f"average per setting {min(got.load.values()):.1f}-{max(got.load.values()):.1f} on "
             f"{model.cores} cores (other engineers' jobs shared the machine).")
    fit = (f"Link, fitted on {model.link_rate} x 2 hosts: α {ms(model.link_alpha_s):.2f} ms, "
           f"β {model.link_beta_s_per_byte * 1e9:.2f} s/GB (bus bandwidth "
           f"{1 / model.link_beta_s_per_byte / 1e9:.3f} GB/s, "
           f"{8 / model.link_beta_s_per_byte / rate_bits(model.link_rate):.0%} of line rate; "
           f"fit error ≤ {model.link_fit_error:.0%}). Host ceiling (unshaped): {host}.")
    ar = report.md_table(["setting", "MiB", "measured ms", "predicted ms", "error", "bound by",
                          "role"],
                         [(Setting(c.hosts, c.rate).label, c.bytes / 2**20, ms(c.measured_s),
                           ms(c.predicted_s), f"{c.error:+.0%}", c.bound, c.role) for c in checks])
    sc = report.md_table(["setting", "step ms", "efficiency", "predicted step ms",
                          "predicted efficiency", "error"],
                         [(Setting(s.hosts, s.rate).label, ms(s.step_time_s), s.efficiency,
                           ms(s.predicted_step_s), s.predicted_efficiency, f"{s.error:+.0%}")
                          for s in steps])
    sc_text = (f"hvdlm.train, weak scaling, micro-batch {args.micro_batch} per rank, "
               f"gradients {grad_bytes / 2**20:.2f} MiB, 1-rank step c₁ = "
               f"{ms(got.compute_s):.1f} ms; E = c₁ / t(N) (so N ranks sharing "
               f"{model.cores} cores count against it).\n\n{sc}" if steps else "not measured")
    vt = report.md_table(["setting", "role", "bound by", "worst allreduce error",
                          "efficiency error", "within 20%"],
                         [(v["setting"], v["role"], v["bound"],
                           f"{v['allreduce_max_abs_error']:.0%}",
                           "-" if v["efficiency_error"] is None else f"{v['efficiency_error']:+.0%}",
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


# ---------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.emulated", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/scaling/emulated")
    p.add_argument("--hosts", default="2,3,4", help="host counts, e.g. 2,3,4")
    p.add_argument("--rates", default="100mbit,1gbit,10gbit",
                   help="link rates (tc units); unshaped (0) is always added: the host ceiling")
    p.add_argument("--sizes", default="1M,4M,16M", help="allreduce sizes")
    p.add_argument("--calibrate", default="1gbit", help="the link rate α, β are fitted on (2 hosts)")
    p.add_argument("--iters", type=int, default=10, help="timed allreduce calls (fewer on slow links)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per run")
    p.add_argument("--micro-batch", type=int, default=12, help="per-rank micro-batch (weak)")
    p.add_argument("--no-scaling", action="store_true", help="allreduce only, no training steps")
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
    if os.geteuid() != 0:
        print("benchmarks.emulated: error: needs root (network namespaces); run it with sudo",
              file=sys.stderr)
        return 2
    if args.nice:
        os.environ["HVDLM_BENCH_NICE"] = str(args.nice)
    cal = Setting(2, args.calibrate)
    from benchmarks import scaling
    with tempfile.TemporaryDirectory(prefix="hvdlm-emu-data-") as tmp:
        data = None if args.no_scaling else scaling.make_dataset(Path(tmp))
        got = sweep(args, cal, data)
        grad_bytes = scaling.grad_bytes(data) if data else 0
    model = calibrate(got.allreduce, cal, len(os.sched_getaffinity(0)))
    checks = compare(got.allreduce, model, cal)
    steps = compare_steps(got.steps, got.compute_s, grad_bytes, model) if got.steps else []
    write_report(Path(args.out), got, model, checks, steps, grad_bytes, args)
    for v in verdicts(checks, steps):
        eff = v["efficiency_error"]
        print(f"{v['setting']:18s} {v['role']:17s} allreduce worst {v['allreduce_max_abs_error']:4.0%}"
              + (f", efficiency {eff:+.0%}" if eff is not None else "")
              + ("" if v["within_20pct"] else "  MISSES 20%"))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
