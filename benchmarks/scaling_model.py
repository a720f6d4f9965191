"""benchmarks.scaling's measurements (`Run`) and the cost model fitted to them.

`cost_model` fits the ring allreduce's α and β (benchmarks/costmodel.py) to a
benchmarks.allreduce report, or to a short allreduce measurement made on the spot, takes the
compute terms from the scaling runs themselves (`measured_compute`) and predicts the
weak-scaling efficiency, on this machine and on the networks of costmodel.NETWORKS.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import allreduce, costmodel
from benchmarks.workload import grad_bytes

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


def cost_model(runs: list[Run], args: argparse.Namespace, data: Path,
               timeline: dict | None) -> dict:
    """Fit α, β (from --allreduce, else a short measurement now) and predict E(N)."""
    nmax = max(r.np for r in runs)
    if args.allreduce:
        fit = costmodel.fit_report(Path(args.allreduce))
    else:
        rows, _ = allreduce.measure(["hvdlm"], max(2, nmax), list(ALLREDUCE_SIZES), 10, 1,
                                    args.hosts)
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
    ms = (timeline or {}).get("ms_per_step", {})
    copy = sum(ms.get(k, 0.0) for k in COPY_ACTIVITIES) / 1e3 / gbytes
    for config in ("hvdlm-nograds", "nocomm"):
        without = {r.np: r for r in runs if r.mode == "weak" and r.config == config}
        if max(without, default=1) > 1:
            largest = without[max(without)]
            return costmodel.Compute(solo.step_time_s, min(1.0, largest.efficiency),
                                     largest.relative_step_times, copy, config)
    return costmodel.Compute(solo.step_time_s, 1.0, solo.relative_step_times, copy, "hvdlm")
