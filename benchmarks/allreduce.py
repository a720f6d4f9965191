"""Allreduce bandwidth: Horovod (hvdlm's settings and Horovod's defaults) vs torch.distributed.

    python -m benchmarks.allreduce --np 2 --sizes 4M,16M,64M --out runs/allreduce
    python -m benchmarks.allreduce --device cuda --np 4 --sizes 4M,64M,256M --out runs/ar-gpu
    python -m benchmarks.allreduce --np 2 --sizes 4M --backends horovod,torch --iters 20 --rounds 5
    python -m benchmarks.allreduce --hosts 2 --rate 1gbit --delay 0.2ms --out runs/ar-2h  (root)
    taskset -c 0 python -m benchmarks.allreduce --np 2 --sizes 64K --iters 200 --out runs/ar-1c

The last puts both ranks on one core, the case of scripts/horovod-patches/gloo-yield-on-busy-
pair.patch: before it a 64 KiB allreduce through Horovod cost scheduler ticks (7.9 ms against
torch's 0.4 ms at HZ=250); after it, about what torch.distributed's Gloo costs (here 0.26 ms
with hvdlm's settings, 0.19 ms for Gloo).

--device cuda (one GPU per rank, mapped as hvdlm's trainer maps them; on a Slurm node one
task per GPU, see slurm/benchmark.sbatch): Horovod built with NCCL (`hvdlm`; on GPUs hvdlm
leaves Horovod's defaults, so `defaults` is the same run) against torch.distributed NCCL
(`nccl`), each call timed until the GPU has finished it, with the NCCL settings of
benchmarks.harness.nccl_env. Without a GPU, --device cuda is a one-line error.

Every configuration runs as its own job of N ranks (hvdlm.launch's `run_on_hosts`, each rank
pinned to an equal share of the cores), in rounds that interleave the configurations, so a
change of machine load hits them alike. Per size: in-place float32 SUM allreduce, time after
warm-up = median of `--iters` calls, then the median over rounds. As nccl-tests defines them
(its doc/PERFORMANCE.md): algbw = S/t, busbw = algbw · 2(N-1)/N for allreduce (`bus_bandwidth`),
the rate each link of a ring must carry, comparable across N and with the link's own speed
(0 for one rank, which sends nothing). Writes DIR/report.json, DIR/report.md and (with
matplotlib, `pip install 'hvdlm[bench]'`) DIR/allreduce.png. The committed report of this
machine is docs/scaling/allreduce/report.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from benchmarks import report
from benchmarks.harness import (Launch, add_common, emulated_hosts, module_cmd, read_result,
                                split_config)

# name -> (backend, description); benchmarks.horovod_ranks / torch_ranks run each.
CONFIGS = {
    "hvdlm": ("horovod", "hvdlm.cluster.distributed.init() settings"),
    "defaults": ("horovod", "hvd.init() with Horovod's defaults"),
    "gloo": ("torch", "torch.distributed Gloo, all_reduce in place"),
    "nccl": ("torch", "torch.distributed NCCL, all_reduce in place"),
}
# --backends on each --device: on GPUs hvdlm keeps Horovod's defaults (one run says both).
BACKEND_CONFIGS = {"cpu": {"horovod": ["hvdlm", "defaults"], "torch": ["gloo"]},
                   "cuda": {"horovod": ["hvdlm"], "torch": ["nccl"]}}
BUSBW_FORMULA = "busbw = algbw · 2(N-1)/N, algbw = S/t (nccl-tests' definition for allreduce)"
RANK_MODULES = {"horovod": "benchmarks.horovod_ranks", "torch": "benchmarks.torch_ranks"}


@dataclass
class Row:
    backend: str
    np: int
    bytes: int
    time_s: float
    algbw_gbps: float
    busbw_gbps: float
    config: str


def bus_bandwidth(size: int, seconds: float, n: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s of an allreduce of `size` bytes over n ranks taking `seconds`:
    algbw = S/t; busbw = algbw · 2(n-1)/n, as nccl-tests defines it for allreduce."""
    algbw = size / seconds / 1e9
    return algbw, algbw * 2 * (n - 1) / n


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


# ---------------------------------------------------------------- the driver

def backend(config: str) -> str:
    return CONFIGS[split_config(config, CONFIGS)[0]][0]


def describe(config: str) -> str:
    return CONFIGS[split_config(config, CONFIGS)[0]][1]


def measure(configs: list[str], np_: int, sizes: list[int], iters: int, rounds: int,
            launch: Launch = Launch()) -> tuple[list[Row], dict[str, dict]]:
    """Median over rounds of each config's per-size time; rounds interleave the configs."""
    per: dict[str, dict[int, list[float]]] = {c: {s: [] for s in sizes} for c in configs}
    info: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="hvdlm-ar-", dir=launch.tmp) as tmp:
        for rnd in range(rounds):
            for config in configs:
                result = Path(tmp, f"{configs.index(config)}-{rnd}.json")
                base, env = split_config(config, CONFIGS)
                launch.run(np_, module_cmd(RANK_MODULES[backend(config)], "allreduce",
                                           "--config", base, "--sizes", ",".join(map(str, sizes)),
                                           "--iters", iters, "--result", result), env)
                got = read_result(result)
                for size in sizes:
                    per[config][size].append(got["times"][str(size)])
                info[config] = {"threads": got["threads"], "env": got["env"],
                                **({"nccl_built": got["nccl_built"]} if "nccl_built" in got
                                   else {})}
    rows = []
    for config in configs:
        for size in sizes:
            t = report.median(per[config][size])
            rows.append(Row(backend(config), np_, size, t, *bus_bandwidth(size, t, np_), config))
    return rows, info


def ratios(rows: list[Row], num: str = "hvdlm", den: str = "gloo") -> dict[int, float]:
    """num's bandwidth over den's per size (algbw: the same ratio as busbw, and defined for
    one rank)."""
    by = {(r.config, r.bytes): r.algbw_gbps for r in rows}
    return {s: by[(num, s)] / by[(den, s)] for (c, s) in by if c == num and (den, s) in by}


ISSUE_SIZES = (4 << 20, 16 << 20, 64 << 20)  # the sizes the median ratio is taken over


def median_ratio(r: dict[int, float]) -> float | None:
    """Median of the ratios at 4, 16 and 64 MiB (those measured), else over every size."""
    chosen = [v for s, v in r.items() if s in ISSUE_SIZES] or list(r.values())
    return report.median(chosen) if chosen else None


def write_report(out: Path, rows: list[Row], info: dict, args: argparse.Namespace) -> None:
    device = getattr(args, "device", "cpu")  # reports of before --device: the CPU
    peer = "nccl" if device == "cuda" else "gloo"
    r = ratios(rows, den=peer)
    rd = ratios(rows, "defaults", peer)
    payload = {"results": [asdict(x) for x in rows], "np": args.np, "iters": args.iters,
               "rounds": args.rounds, "hosts": args.hosts, "rate": args.rate,
               "delay": args.delay, "device": device, "busbw_formula": BUSBW_FORMULA,
               "configs": {c: {"backend": backend(c), "what": describe(c), **info.get(c, {})}
                           for c in info},
               "busbw_ratio_hvdlm_vs_torch": {str(k): v for k, v in r.items()},
               "median_ratio_hvdlm_vs_torch": median_ratio(r),
               "busbw_ratio_defaults_vs_torch": {str(k): v for k, v in rd.items()},
               "machine": report.machine_info()}
    table = report.md_table(["backend", "config", "np", "size (MiB)", "time (ms)",
                             "algbw (GB/s)", "busbw (GB/s)"],
                            [(x.backend, x.config, x.np, x.bytes / 2**20, x.time_s * 1e3,
                              x.algbw_gbps, x.busbw_gbps) for x in rows])
    where = (f"{args.hosts} emulated hosts, rate {args.rate}, delay {args.delay}"
             if args.hosts else "one GPU each, NCCL" if device == "cuda" else
             "one machine, loopback")
    if getattr(args, "launcher", "local") == "srun":
        where = f"Slurm job steps, {'one GPU per task, NCCL' if device == 'cuda' else 'CPU'}"
    text = (f"{args.np} ranks ({where}), each pinned to an equal share of the cores; "
            f"in-place float32 SUM; median of {args.iters} calls after warm-up, then median of "
            f"{args.rounds} interleaved rounds; {BUSBW_FORMULA}.\n\n")
    if r:
        text += (f"Bandwidth of Horovod with hvdlm's settings over torch.distributed {peer}: "
                 + ", ".join(f"{s / 2**20:g} MiB {v:.2f}x" for s, v in sorted(r.items()))
                 + f"; median at 4/16/64 MiB {payload['median_ratio_hvdlm_vs_torch']:.2f}x.")
    if rd:
        text += (" Horovod's defaults: " + ", ".join(f"{v:.2f}x" for _, v in sorted(rd.items()))
                 + ".")
    cfgs = "\n".join(f"- `{c}`: {describe(c)}; torch threads "
                     f"{info[c]['threads']}; env {info[c]['env'] or '{}'}" for c in info)
    series = {}
    for config in info:
        mine = sorted((x.bytes, x.busbw_gbps) for x in rows if x.config == config)
        series[f"{backend(config)} ({config})"] = ([b / 2**20 for b, _ in mine],
                                                   [v for _, v in mine])
    report.write(out, payload, "Allreduce bandwidth",
                 [("Results", text + "\n\n" + table), ("Configurations", cfgs),
                  ("Plot", "![busbw](allreduce.png)")],
                 [report.Figure("allreduce.png", f"allreduce, {args.np} ranks, {where}",
                                "message size (MiB)", "bus bandwidth (GB/s)", series,
                                logx=True)])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.allreduce", description=__doc__.split("\n")[0])
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--sizes", default="4M,16M,64M", help="comma list: 4M,16M,64M or bytes")
    p.add_argument("--out", default="runs/allreduce")
    p.add_argument("--backends", default="horovod,torch", help="horovod,torch")
    p.add_argument("--configs", help="explicit config list (hvdlm,defaults,gloo; on "
                   "--device cuda hvdlm,defaults,nccl)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="interleaved repeats of every config")
    p.add_argument("--hosts", type=int, default=0, help="emulated hosts (root; see scripts/)")
    p.add_argument("--rate", default="1gbit", help="with --hosts: per-host egress rate")
    p.add_argument("--delay", default="0ms", help="with --hosts: one-way delay")
    add_common(p, device=True)
    return p.parse_args(argv)


def choose_configs(args: argparse.Namespace) -> list[str]:
    """The configurations to run: --configs, else those of --backends on --device; a
    configuration of the other device is refused before any rank starts."""
    configs = (args.configs.split(",") if args.configs else
               [c for b in args.backends.split(",")
                for c in BACKEND_CONFIGS[args.device][b.strip()]])
    other = {"cpu": "nccl", "cuda": "gloo"}[args.device]
    for config in configs:
        if split_config(config, CONFIGS)[0] == other:  # unknown names fail here too
            raise SystemExit(f"benchmarks.allreduce: config {other} does not run on "
                             f"--device {args.device}")
    return configs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    launch = Launch.from_args(args)
    configs = choose_configs(args)
    with emulated_hosts("benchmarks.allreduce", args.hosts, args.rate, args.delay):
        rows, info = measure(configs, args.np, sizes, args.iters, args.rounds, launch)
    write_report(Path(args.out), rows, info, args)
    for x in rows:
        print(f"{x.backend:8s} {x.config:9s} np={x.np} {x.bytes / 2**20:8.2f} MiB "
              f"{x.time_s * 1e3:9.2f} ms  busbw {x.busbw_gbps:.3f} GB/s")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
