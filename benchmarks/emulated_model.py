"""The cost model of benchmarks.emulated: a ring allreduce bounded by the link or the host.

    T(N, S; R) = max(2(N-1)·α₁ + 2(N-1)/N·S·β₁·R₁/R,  2(N-1)·α_h(N) + 2(N-1)/N·S·β_h(N))

`calibrate` fits the link term on one setting and the host ceiling on the unshaped ones,
`compare` and `fit_steps` check it against the allreduce times and training steps measured
(`Measured`); benchmarks/emulated.py's docstring derives the model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from benchmarks import costmodel, report

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


@dataclass
class Model:
    """α-β ring allreduce with a link term (one calibration) and a host ceiling per N."""
    link_alpha_s: float
    link_beta_s_per_byte: float  # at link_rate
    link_rate: str
    link_fit_error: float
    host: dict[int, costmodel.Fit] = field(default_factory=dict)  # N -> unshaped fit
    cores: int = 1
    step_overhead_s: float = 0.0  # per training step beyond compute + allreduces (fitted)

    def beta_link(self, rate: str) -> float:
        return self.link_beta_s_per_byte * rate_bits(self.link_rate) / rate_bits(rate)

    def host_fit(self, n: int) -> costmodel.Fit:
        """The unshaped fit at N, else the nearest measured N (a stated extrapolation)."""
        nearest = n if n in self.host else min(self.host, key=lambda k: abs(k - n))
        return self.host[nearest]

    def link_s(self, n: int, size: float, rate: str) -> float:
        return costmodel.ring_time(n, size, self.link_alpha_s, self.beta_link(rate))

    def host_s(self, n: int, size: float) -> float:
        host = self.host_fit(n)
        return costmodel.ring_time(n, size, host.alpha_s, host.beta_s_per_byte)

    def allreduce_s(self, n: int, size: float, rate: str) -> float:
        """The slower of the link and the host sets the pace (they overlap, not add)."""
        return max(self.link_s(n, size, rate), self.host_s(n, size))

    def step_s(self, n: int, rate: str, compute_s: float, grad_bytes: float) -> float:
        share = math.ceil(n / self.cores)  # ranks per core: the slowest rank sets the pace
        return (compute_s * share + self.allreduce_s(n, grad_bytes, rate)
                + self.allreduce_s(n, 16, rate) + self.step_overhead_s)


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
            link_bound = model.link_s(st.hosts, size, st.rate) >= model.host_s(st.hosts, size)
            bound = "link" if link_bound else "host"
            out.append(Check(st.hosts, st.rate, size, t, pred, pred / t - 1, role_of(st, cal),
                             bound))
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
              model: Model, cal: Setting) -> tuple[float, list[StepCheck]]:
    """c₁ = median of every 1-rank run (others' load comes and goes within seconds); the per-
    step overhead (Horovod's per-tensor negotiation and background thread on shared cores) is
    fitted on the calibration setting, as α and β are. Returns c₁ and one check per setting."""
    c1 = report.median(compute.values())
    if cal in steps:
        model.step_overhead_s = max(0.0, steps[cal] - model.step_s(cal.hosts, cal.rate, c1,
                                                                    grad_bytes))
    out = []
    for st, t in steps.items():
        pred = model.step_s(st.hosts, st.rate, c1, grad_bytes)
        eff, peff = c1 / t, c1 / pred
        out.append(StepCheck(st.hosts, st.rate, t, eff, pred, peff, peff / eff - 1,
                             role_of(st, cal), compute[st]))
    return c1, out


@dataclass
class Measured:
    allreduce: dict[Setting, dict[int, float]] = field(default_factory=dict)
    steps: dict[Setting, float] = field(default_factory=dict)
    compute: dict[Setting, float] = field(default_factory=dict)  # paired 1-rank step times
    compute_s: float = math.nan  # c₁: their median
    command: str = ""
    load: dict[str, float] = field(default_factory=dict)  # 1-min load average per setting
    seconds: float = 0.0
