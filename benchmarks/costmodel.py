"""The cost model of data-parallel training: a ring allreduce, a step, predictions for large N.

    python -m benchmarks.costmodel --allreduce runs/allreduce --compute-s STEP_S --params N
    python -m benchmarks.costmodel --allreduce runs/allreduce --compute-s STEP_S --params 124e6 \
        --overlap 0.5 --scaling runs/scaling --out runs/costmodel

Ring allreduce of S bytes over N ranks (Patarasuk & Yuan; what Gloo and NCCL run), `Ring`:
    T(N, S) = 2(N-1)·α + 2(N-1)/N · S·β
with α (latency per ring step) and β (seconds per byte) fitted to measured times (`fit`). A
data-parallel step under weak scaling (`step_time`; E(N) = c / t(N)):
    t(N) = c·m(N)·⌈N/cores⌉/s + (1 - h)·T(N, G) + k·T(N, 16 B) + G·γ + o
c: the 1-rank step time; G: gradient bytes; h: the hidden fraction of the allreduce; k: small
collectives per step (hvdlm: 1, its metrics); γ: Horovod's fusion-buffer copies per byte (its
timeline); o: a fixed per-step overhead. The measured compute terms (`Compute`; neutral when
unknown): s, the throughput a rank keeps at N ranks before any gradient moves; m(N), the
straggler factor E[max of N draws] of the per-step times over their mean (a synchronous step
waits for the slowest rank); ⌈N/cores⌉ only where ranks pinned one core each share fewer cores.

benchmarks.scaling predicts E(N) up to N = 512 here and on named networks (`Network`: its
own latency, bandwidth, software latency and step-time variation; left out, the last two are
this machine's); benchmarks/published.py checks it against a published figure.
benchmarks.emulated bounds T by the slower of link and host (`Roofline`, fitted by
`calibrate`):
    T(N, S; R) = max(2(N-1)·α₁ + 2(N-1)/N·S·β₁·R₁/R,  2(N-1)·α_h(N) + 2(N-1)/N·S·β_h(N))
α₁, β₁ fitted on one link setting of rate R₁, α_h(N), β_h(N) on unshaped runs. Every report
states its assumptions; all take one flat ring over all ranks (no hierarchy).
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from benchmarks import report

AllreduceTime = Callable[[int, float], float]  # (N ranks, bytes) -> seconds
PREDICT_N = (2, 4, 8, 16, 32, 64, 128, 256, 512)
UNSHAPED = "0"  # an emulated link without a rate limit


def ring_time(n: int, size: float, alpha: float, beta: float) -> float:
    """T(N, S) of ring allreduce; 0 for one rank."""
    if n <= 1:
        return 0.0
    return 2 * (n - 1) * alpha + 2 * (n - 1) / n * size * beta


@dataclass
class Ring:
    """One ring's α and β; called as T(N, S)."""
    alpha_s: float
    beta_s_per_byte: float

    def __call__(self, n: int, size: float) -> float:
        return ring_time(n, size, self.alpha_s, self.beta_s_per_byte)


@dataclass
class Fit(Ring):
    points: int
    max_rel_error: float  # of the fit over its own points


def fit(points: Iterable[tuple[int, int, float]]) -> Fit:
    """Least-squares α, β ≥ 0 from (N, bytes, seconds); relative errors weigh sizes alike."""
    pts = [(n, s, t) for n, s, t in points if n > 1 and t > 0]
    if not pts:
        raise ValueError("no multi-rank allreduce measurements to fit")
    # Minimise sum(((a·x + b·y) - t) / t)^2 with x = 2(N-1), y = 2(N-1)/N·S.
    rows = [(2 * (n - 1) / t, 2 * (n - 1) / n * s / t) for n, s, t in pts]
    sxx = sum(x * x for x, _ in rows)
    syy = sum(y * y for _, y in rows)
    sxy = sum(x * y for x, y in rows)
    sx, sy = sum(x for x, _ in rows), sum(y for _, y in rows)
    det = sxx * syy - sxy * sxy
    alpha, beta = ((syy * sx - sxy * sy) / det, (sxx * sy - sxy * sx) / det) if det else (0, 0)
    if alpha < 0 or det == 0:  # bandwidth only
        alpha, beta = 0.0, sy / syy
    elif beta < 0:  # latency only
        alpha, beta = sx / sxx, 0.0
    err = max(abs(ring_time(n, s, alpha, beta) - t) / t for n, s, t in pts)
    return Fit(alpha, beta, len(pts), err)


def fit_report(allreduce_dir: Path, config: str = "hvdlm") -> Fit:
    """Fit α, β to one configuration's rows of a benchmarks.allreduce report."""
    rows = json.loads(Path(allreduce_dir, "report.json").read_text())["results"]
    return fit((r["np"], r["bytes"], r["time_s"]) for r in rows if r["config"] == config)


def expected_max(relative: Sequence[float], n: int) -> float:
    """E[max of n independent draws] from the empirical distribution `relative` (per-step
    times over their mean): the straggler factor m(n). 1 for one rank or no samples; it grows
    with n and saturates at the largest time observed."""
    xs = sorted(relative)
    k = len(xs)
    if n <= 1 or not k:
        return 1.0
    return sum(x * ((i / k) ** n - ((i - 1) / k) ** n) for i, x in enumerate(xs, 1))


@dataclass
class Compute:
    """Per-rank compute of a step: c seconds alone, slowed by sharing s, stragglers m(N) and
    ranks sharing cores; plus what a step costs besides compute and allreduces."""
    seconds: float
    shared_throughput: float = 1.0  # s
    relative_steps: Sequence[float] = ()  # step times / their mean, for m(N)
    copy_s_per_byte: float = 0.0  # γ: fusion-buffer copies, once N > 1
    source: str = ""  # the benchmark configuration s and the step times were measured on
    cores: int = 0  # > 0: ranks pinned one core each on this many cores (⌈N/cores⌉ per core)
    overhead_s: float = 0.0  # o: per step, beyond compute and allreduces (fitted)

    def at(self, n: int) -> float:
        if n <= 1:
            return self.seconds
        per_core = math.ceil(n / self.cores) if self.cores else 1
        return self.seconds * expected_max(self.relative_steps, n) / self.shared_throughput \
            * per_core


def step_time(n: int, compute: Compute, grad_bytes: float, allreduce: AllreduceTime,
              overlap: float = 0.0, small_per_step: int = 1) -> float:
    copies = compute.copy_s_per_byte * grad_bytes if n > 1 else 0.0
    return (compute.at(n) + (1 - overlap) * allreduce(n, grad_bytes)
            + small_per_step * allreduce(n, 16) + copies + compute.overhead_s)


def efficiency(n: int, compute: Compute, grad_bytes: float, allreduce: AllreduceTime,
               overlap: float = 0.0, small_per_step: int = 1) -> float:
    return compute.seconds / step_time(n, compute, grad_bytes, allreduce, overlap,
                                       small_per_step)


def measured_overlap(compute: Compute, step_n: float, n: int, grad_bytes: float,
                     allreduce: AllreduceTime, small_per_step: int = 1) -> float:
    """h that makes the model reproduce a measured step time (informative; can be < 0)."""
    comm = allreduce(n, grad_bytes)
    others = step_time(n, compute, grad_bytes, allreduce, 1.0, small_per_step)
    return (others + comm - step_n) / comm if comm else 0.0


# ---------------------------------------------------------------- named networks

@dataclass(frozen=True)
class Network:
    """A network to predict for, by its own inputs: per-link latency and usable bandwidth;
    the stack's software latency per ring step and the nodes' step-time variation (step
    times / their mean) where known, else (None) the ones fitted and measured here."""
    name: str
    latency_s: float
    bandwidth_Bps: float
    software_latency_s: float | None = None
    relative_steps: tuple[float, ...] | None = None

    def ring(self, here: Ring) -> Ring:
        software = here.alpha_s if self.software_latency_s is None else self.software_latency_s
        return Ring(self.latency_s + software, 1 / self.bandwidth_Bps)

    def compute(self, here: Compute) -> Compute:
        return here if self.relative_steps is None else replace(
            here, relative_steps=self.relative_steps)


# Common interconnects, each by its own inputs (stated, not measured here): per-link latency,
# usable bandwidth (90% of line rate; 80% for NVLink-class), the collective library's software
# latency per ring step on it (sockets: Gloo/NCCL over TCP; verbs: NCCL over InfiniBand), and
# no step-time variation (1.0: dedicated nodes, none given). A measured row replaces these.
NETWORKS = (Network("25GbE (TCP)", 20e-6, 25e9 / 8 * 0.9, 15e-6, (1.0,)),
            Network("100Gb InfiniBand", 3e-6, 100e9 / 8 * 0.9, 5e-6, (1.0,)),
            Network("400Gb InfiniBand", 3e-6, 400e9 / 8 * 0.9, 5e-6, (1.0,)),
            Network("NVLink-class (450 GB/s)", 2e-6, 450e9 * 0.8, 3e-6, (1.0,)))


def predictions(compute: Compute, grad_bytes: float, local: Ring, overlap: float,
                small_per_step: int = 1, ns: Sequence[int] = PREDICT_N,
                networks: Sequence[Network] = NETWORKS) -> dict:
    """Efficiency for each N on this machine's fitted ring and on each network."""
    def row(ring: Ring, c: Compute) -> dict:
        return {"alpha_s": ring.alpha_s, "beta_s_per_byte": ring.beta_s_per_byte,
                "efficiency": {str(n): efficiency(n, c, grad_bytes, ring, overlap,
                                                  small_per_step) for n in ns}}

    nets = {"this machine (fitted)": row(Ring(local.alpha_s, local.beta_s_per_byte), compute)}
    for net in networks:
        nets[net.name] = row(net.ring(local), net.compute(compute))
    return nets


def network_table(nets: dict) -> str:
    """The predictions as a Markdown table, a row per network."""
    rows = [(name, *(f"{e:.2f}" for e in net["efficiency"].values()))
            for name, net in nets.items() if isinstance(net, dict)]
    return report.md_table(["network", *(f"N={n}" for n in PREDICT_N)], rows)


def assumptions(compute: Compute, overlap: float) -> str:
    """What every prediction of this model takes for granted, with the measured terms."""
    rel = list(compute.relative_steps)
    if rel:
        cv = report.variation(rel)
        jitter = (f"per-step compute varies from step to step as measured here (coefficient of "
                  f"variation {cv:.1%}), independently on each rank, and a step waits for the "
                  f"slowest rank: m(N) = E[max of N draws] from that distribution (m(2) = "
                  f"{expected_max(rel, 2):.3f}; it saturates at the slowest step observed, "
                  f"{max(rel):.2f}× the mean)")
    else:
        jitter = "every step takes the same time on every rank (m = 1)"
    share = compute.shared_throughput
    how = {"hvdlm-nograds": "hvdlm's N-rank runs without the gradient allreduce",
           "nocomm": "N ranks training alone side by side"}.get(compute.source)
    sharing = (f"before any gradient moves each rank keeps s = {share:.3f} of its 1-rank "
               f"throughput, as measured here ({how}), on every node"
               if how else "a rank's throughput does not depend on its neighbours (s = 1)")
    hidden = (" (0 here: with one core per rank the allreduce is CPU work that cannot hide "
              "behind the backward pass)" if overlap == 0 else f" ({overlap:g}, as given)")
    copies = (f"copying gradients into and out of the fusion buffer takes "
              f"{compute.copy_s_per_byte * 1e9:.2f} s/GB, as Horovod's timeline measured here"
              if compute.copy_s_per_byte else "no time for fusion-buffer copies (γ = 0)")
    return (f"Weak scaling; per-rank compute c = {compute.seconds * 1e3:.1f} ms per step alone; "
            f"{sharing}; {jitter}; {copies}; one flat ring over all ranks; gradients in fp32 "
            "and fused into one allreduce; one 16-byte metrics allreduce per step; on a named "
            "network its own inputs: α = link latency + its stack's software latency per ring "
            "step, β = 1/(90% of line rate) (80% for NVLink-class), no step-time variation "
            "(m = 1), as stated in costmodel.NETWORKS; s and the copies as above; "
            f"h = the hidden fraction of the gradient allreduce{hidden}.")


# ---------------------------------------------------------------- link or host: the roofline

def rate_bits(rate: str) -> float:
    """100mbit -> 1e8 bit/s; "0" (unshaped) -> inf."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12, "bit": 1.0}
    if rate == UNSHAPED:
        return math.inf
    for unit, scale in units.items():
        if rate.endswith(unit):
            return float(rate[:-len(unit)]) * scale
    raise SystemExit(f"bad rate {rate!r}: use e.g. 100mbit, 1gbit, 10gbit or 0 (unshaped)")


@dataclass(frozen=True)
class Setting:
    """N emulated hosts whose links are shaped to one rate."""
    hosts: int
    rate: str  # tc units (100mbit, 1gbit); "0" = unshaped

    @property
    def bits_per_s(self) -> float:
        return rate_bits(self.rate)

    @property
    def label(self) -> str:
        return f"{'unshaped' if self.rate == UNSHAPED else self.rate} x {self.hosts}"


@dataclass
class Roofline:
    """Ring allreduce bounded by the link (fitted on one rate, β scaled as 1/rate) or by the
    host (a fit per N, unshaped): the slower sets the pace (they overlap, not add)."""
    link_alpha_s: float
    link_beta_s_per_byte: float  # at link_rate
    link_rate: str
    link_fit_error: float
    host: dict[int, Fit] = field(default_factory=dict)  # N -> unshaped fit
    cores: int = 1
    step_overhead_s: float = 0.0  # o, fitted by `fit_overhead`

    def beta_link(self, rate: str) -> float:
        return self.link_beta_s_per_byte * rate_bits(self.link_rate) / rate_bits(rate)

    def host_fit(self, n: int) -> Fit:
        """The unshaped fit at N, else the nearest measured N (a stated extrapolation)."""
        nearest = n if n in self.host else min(self.host, key=lambda k: abs(k - n))
        return self.host[nearest]

    def link_s(self, n: int, size: float, rate: str) -> float:
        return ring_time(n, size, self.link_alpha_s, self.beta_link(rate))

    def host_s(self, n: int, size: float) -> float:
        return self.host_fit(n)(n, size)

    def allreduce_s(self, n: int, size: float, rate: str) -> float:
        return max(self.link_s(n, size, rate), self.host_s(n, size))

    def bound(self, n: int, size: float, rate: str) -> str:
        """Which term sets the time: "link" or "host"."""
        return "link" if self.link_s(n, size, rate) >= self.host_s(n, size) else "host"

    def step_s(self, n: int, rate: str, compute_s: float, grad_bytes: float) -> float:
        """Compute shared by ranks pinned one core each, the gradient allreduce not hidden,
        one metrics allreduce, the overhead o."""
        compute = Compute(compute_s, cores=self.cores, overhead_s=self.step_overhead_s)
        return step_time(n, compute, grad_bytes, lambda k, s: self.allreduce_s(k, s, rate))

    def link_busbw_gbps(self) -> float | None:
        """The link's fitted bus bandwidth; None when the fit found no bandwidth term (β = 0,
        as tiny message sizes in noisy runs can give)."""
        beta = self.link_beta_s_per_byte
        return 1e-9 / beta if beta > 0 else None

    def as_json(self) -> dict:
        return {"link": {"rate": self.link_rate, "alpha_s": self.link_alpha_s,
                         "beta_s_per_byte": self.link_beta_s_per_byte,
                         "fit_max_rel_error": self.link_fit_error,
                         "busbw_gbps": self.link_busbw_gbps()},
                "host": {str(n): asdict(f) for n, f in sorted(self.host.items())},
                "cores": self.cores}


ROOFLINE_ASSUMPTIONS = (
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


def calibrate(times: dict[Setting, dict[int, float]], cal: Setting, cores: int) -> Roofline:
    """Fit the link on `cal` and the host ceiling on every unshaped setting."""
    if cal not in times:
        raise SystemExit(f"the calibration setting {cal.label} was not measured")
    link = fit((cal.hosts, s, t) for s, t in times[cal].items())
    host = {st.hosts: fit((st.hosts, s, t) for s, t in sizes.items())
            for st, sizes in times.items() if st.rate == UNSHAPED}
    if not host:
        raise SystemExit("no unshaped (rate 0) setting measured: the host ceiling is unknown")
    return Roofline(link.alpha_s, link.beta_s_per_byte, cal.rate, link.max_rel_error, host,
                    cores)


def fit_overhead(model: Roofline, cal: Setting, step_s: float, compute_s: float,
                 grad_bytes: float) -> None:
    """o: what the calibration setting's measured step takes beyond the model (≥ 0), as α and
    β are fitted there too (Horovod's per-tensor negotiation and background thread)."""
    model.step_overhead_s = max(0.0, step_s - model.step_s(cal.hosts, cal.rate, compute_s,
                                                             grad_bytes))


# ---------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.costmodel", description=__doc__.split("\n")[0])
    p.add_argument("--allreduce", required=True, help="a benchmarks.allreduce report folder")
    p.add_argument("--config", default="hvdlm", help="which allreduce rows to fit")
    p.add_argument("--compute-s", type=float, required=True, help="1-rank step time (s)")
    p.add_argument("--params", type=float, required=True, help="model parameters (fp32 grads)")
    p.add_argument("--overlap", type=float, default=0.0, help="hidden fraction h of the allreduce")
    p.add_argument("--scaling", help="a benchmarks.scaling report folder: take its measured "
                   "sharing s, step-time distribution and copy time per byte (default: none)")
    p.add_argument("--out", help="write DIR/report.json and DIR/report.md")
    args = p.parse_args(argv)
    local = fit_report(Path(args.allreduce), args.config)
    compute = Compute(args.compute_s)
    if args.scaling:
        measured = json.loads(Path(args.scaling, "report.json").read_text())["model"]
        compute = Compute(args.compute_s, measured["shared_throughput"],
                          measured["relative_step_times"], measured["copy_s_per_byte"],
                          measured["compute_source"])
    nets = predictions(compute, 4 * args.params, local, args.overlap)
    print(f"alpha {local.alpha_s * 1e6:.1f} us, beta {local.beta_s_per_byte * 1e9:.3f} s/GB "
          f"(fit error <= {local.max_rel_error:.0%} over {local.points} points)")
    for name, net in nets.items():
        print(f"{name:26s} " + "  ".join(f"N={n}: {e:.2f}" for n, e in net["efficiency"].items()))
    if args.out:
        text = assumptions(compute, args.overlap)
        payload = {"fit": asdict(local), "compute_s": args.compute_s,
                   "shared_throughput": compute.shared_throughput,
                   "grad_bytes": 4 * args.params, "overlap": args.overlap, "networks": nets,
                   "assumptions": text, "machine": report.machine_info()}
        report.write(Path(args.out), payload, "Cost model predictions", [
            ("Predicted weak-scaling efficiency", network_table(nets)), ("Assumptions", text)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
