"""A ring-allreduce cost model that explains the measurements and predicts large clusters.

    python -m benchmarks.costmodel --allreduce runs/allreduce --compute-s STEP_S --params N
    python -m benchmarks.costmodel --allreduce runs/allreduce --compute-s STEP_S --params 124e6 \
        --overlap 0.5 --out runs/costmodel

Ring allreduce of S bytes over N ranks (Patarasuk & Yuan; what Gloo and NCCL run):
    T(N, S) = 2(N-1)·α + 2(N-1)/N · S·β
α (latency per ring step) and β (seconds per byte) are fitted by least squares to measured
allreduce times. A data-parallel step under weak scaling then takes
    t(N) = c·m(N)/s + (1 - h)·T(N, G) + k·T(N, 16 B) + G·γ
with c the 1-rank step time (compute), G the gradient bytes, h the fraction of communication
hidden behind the backward pass, k small collectives per step (hvdlm: 1, its metrics
allreduce) and γ the time per byte of Horovod's copies into and out of its fusion buffer
(from a Horovod timeline; 0 when none was recorded); efficiency E(N) = c / t(N).
Two measured compute terms (benchmarks.scaling fills them in; 1 when unknown): s, the
throughput each rank keeps at N ranks before any gradient moves (its `hvdlm-nograds` runs:
hvdlm without the gradient allreduce; else `nocomm`: ranks training alone side by side), and
m(N), the straggler factor: a synchronous step waits for the slowest of N ranks, so with
per-step compute times drawn from the measured distribution (relative to their mean) it
takes E[max of N draws] = m(N).
    python -m benchmarks.costmodel ... --scaling runs/scaling   (s, m and γ of a scaling run)
Assumptions (stated in every report): one ring over all ranks (no hierarchy); α, β of a
network are the per-link figures below, with the software latency of the stack fitted here
added to α.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from benchmarks import report

# Per-link latency (s) and usable bandwidth (bytes/s) of common interconnects; stated, not measured.
NETWORKS = {
    "25GbE (TCP)": {"alpha_s": 20e-6, "bandwidth_Bps": 25e9 / 8 * 0.9},
    "100Gb InfiniBand": {"alpha_s": 3e-6, "bandwidth_Bps": 100e9 / 8 * 0.9},
    "400Gb InfiniBand": {"alpha_s": 3e-6, "bandwidth_Bps": 400e9 / 8 * 0.9},
    "NVLink-class (450 GB/s)": {"alpha_s": 2e-6, "bandwidth_Bps": 450e9 * 0.8},
}
PREDICT_N = (2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class Fit:
    alpha_s: float
    beta_s_per_byte: float
    points: int
    max_rel_error: float  # of the fit over its own points


def ring_time(n: int, size: float, alpha: float, beta: float) -> float:
    """T(N, S) of ring allreduce; 0 for one rank."""
    if n <= 1:
        return 0.0
    return 2 * (n - 1) * alpha + 2 * (n - 1) / n * size * beta


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
    """Per-rank compute of a step: c seconds alone, slowed by sharing s and stragglers m(N)."""
    seconds: float
    shared_throughput: float = 1.0  # s
    relative_steps: Sequence[float] = ()  # step times / their mean, for m(N)
    copy_s_per_byte: float = 0.0  # γ: fusion-buffer copies, once N > 1
    source: str = ""  # the benchmark configuration s and the step times were measured on

    def at(self, n: int) -> float:
        if n <= 1:
            return self.seconds
        return self.seconds * expected_max(self.relative_steps, n) / self.shared_throughput


def step_time(n: int, compute: Compute, grad_bytes: float, alpha: float, beta: float,
              overlap: float = 0.0, small_per_step: int = 1) -> float:
    copies = compute.copy_s_per_byte * grad_bytes if n > 1 else 0.0
    return (compute.at(n) + (1 - overlap) * ring_time(n, grad_bytes, alpha, beta)
            + small_per_step * ring_time(n, 16, alpha, beta) + copies)


def efficiency(n: int, compute: Compute, grad_bytes: float, alpha: float, beta: float,
               overlap: float = 0.0, small_per_step: int = 1) -> float:
    return compute.seconds / step_time(n, compute, grad_bytes, alpha, beta, overlap,
                                       small_per_step)


def measured_overlap(compute: Compute, step_n: float, n: int, grad_bytes: float, alpha: float,
                     beta: float, small_per_step: int = 1) -> float:
    """h that makes the model reproduce a measured step time (informative; can be < 0)."""
    comm = ring_time(n, grad_bytes, alpha, beta)
    others = step_time(n, compute, grad_bytes, alpha, beta, 1.0, small_per_step)
    return (others + comm - step_n) / comm if comm else 0.0


def predictions(compute: Compute, grad_bytes: float, local: Fit, overlap: float,
                small_per_step: int = 1, ns: Sequence[int] = PREDICT_N) -> dict:
    """Efficiency for each N on this machine's fitted link and on each stated network.

    On a network, α = the link's latency + this stack's software latency (the fitted α), and
    β = 1 / link bandwidth.
    """
    def table(alpha: float, beta: float) -> dict[str, float]:
        return {str(n): efficiency(n, compute, grad_bytes, alpha, beta, overlap, small_per_step)
                for n in ns}

    nets = {"this machine (fitted)": {"alpha_s": local.alpha_s, "beta_s_per_byte":
                                      local.beta_s_per_byte,
                                      "efficiency": table(local.alpha_s, local.beta_s_per_byte)}}
    for name, net in NETWORKS.items():
        alpha, beta = net["alpha_s"] + local.alpha_s, 1 / net["bandwidth_Bps"]
        nets[name] = {"alpha_s": alpha, "beta_s_per_byte": beta, "efficiency": table(alpha, beta)}
    return nets


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
            "network α = link latency + the software latency fitted here, β = 1/(90% of line rate) "
            f"(80% for NVLink-class); h = the hidden fraction of the gradient allreduce{hidden}.")


def _union(spans: list[tuple[float, float]]) -> tuple[float, int]:
    """Total length and count of the merged intervals of `spans`."""
    total, count, end = 0.0, 0, float("-inf")
    for a, b in sorted(spans):
        if a > end:
            count += 1
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total, count


def summarise_timeline(path: Path, steps: int) -> dict:
    """Horovod timeline (Chrome trace JSON) -> per step: wall ms in each activity (spans of all
    tensors merged, so fused tensors count once) and how many merged spans (operations)."""
    text = Path(path).read_text().strip().rstrip(",")
    if not text.endswith("]"):
        text += "]"
    open_: dict[tuple, list[tuple[str, float]]] = {}
    spans: dict[str, list[tuple[float, float]]] = {}
    for ev in json.loads(text):
        key = (ev.get("pid"), ev.get("tid"))
        if ev.get("ph") == "B":
            open_.setdefault(key, []).append((ev.get("name", "?"), float(ev["ts"])))
        elif ev.get("ph") == "E" and open_.get(key):
            name, start = open_[key].pop()
            spans.setdefault(name, []).append((start / 1e3, float(ev["ts"]) / 1e3))
    merged = {name: _union(s) for name, s in spans.items()}
    order = sorted(merged, key=lambda n: -merged[n][0])
    return {"steps": steps, "ms_per_step": {n: merged[n][0] / steps for n in order},
            "ops_per_step": {n: merged[n][1] / steps for n in order},
            "tensor_events_per_step": {n: len(spans[n]) / steps for n in order}}


def markdown_sections(model: dict) -> list[tuple[str, str]]:
    """The cost-model part of the scaling report: fit, N=2 check, predictions, assumptions."""
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
    rows = [(name, *(f"{e:.2f}" for e in net["efficiency"].values()))
            for name, net in nets.items() if isinstance(net, dict)]
    pred = (f"Weak-scaling efficiency for a {nets['model_params'] / 1e6:.2f}M-parameter model "
            f"with c = {nets['compute_s'] * 1e3:.1f} ms per step:\n\n"
            + report.md_table(["network", *(f"N={n}" for n in PREDICT_N)], rows)
            + "\n\n![efficiency](efficiency_weak.png) ![networks](predicted_networks.png)")
    return [("Cost model", fit), ("Predictions", pred), ("Assumptions", model["assumptions"])]


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
        report.write_json(Path(args.out), payload)
        rows = [(name, *(f"{e:.2f}" for e in net["efficiency"].values()))
                for name, net in nets.items()]
        report.write_md(Path(args.out), "Cost model predictions", [
            ("Predicted weak-scaling efficiency", report.md_table(
                ["network", *(f"N={n}" for n in PREDICT_N)], rows)),
            ("Assumptions", text)], payload["machine"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
