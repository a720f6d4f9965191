"""Allreduce bandwidth: Horovod (hvdlm's settings and Horovod's defaults) vs torch.distributed Gloo.

    python -m benchmarks.allreduce --np 2 --sizes 4M,16M,64M --out runs/allreduce
    python -m benchmarks.allreduce --np 2 --sizes 4M --backends horovod,torch --iters 20 --rounds 5
    python -m benchmarks.allreduce --hosts 2 --rate 1gbit --delay 0.2ms --out runs/ar-2h  (root)

Every configuration runs as its own job of N ranks (hvdlm.launch's `run_on_hosts`, each rank
pinned to an equal share of the cores), in rounds that interleave the configurations, so a
change of machine load hits them alike. Per size: in-place float32 SUM allreduce, time after
warm-up = median of `--iters` calls, then the median over rounds. As nccl-tests defines them:
algbw = S/t, busbw = algbw · 2(N-1)/N. Writes DIR/report.json, DIR/report.md, DIR/allreduce.png.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from benchmarks import report

# name -> (backend, description); the worker knows how to start each.
CONFIGS = {
    "hvdlm": ("horovod", "hvdlm.distributed.init() settings"),
    "defaults": ("horovod", "hvd.init() with Horovod's defaults"),
    "gloo": ("torch", "torch.distributed Gloo, all_reduce in place"),
}
BACKEND_CONFIGS = {"horovod": ["hvdlm", "defaults"], "torch": ["gloo"]}


@dataclass
class Row:
    backend: str
    np: int
    bytes: int
    time_s: float
    algbw_gbps: float
    busbw_gbps: float
    config: str


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- launching ranks

def split_config(config: str, known: Sequence[str] = tuple(CONFIGS)) -> tuple[str, dict[str, str]]:
    """`hvdlm+HOROVOD_CYCLE_TIME=5+OMP_NUM_THREADS=1` -> ("hvdlm", {extra env}): variants."""
    base, *pairs = config.split("+")
    if base not in known:
        raise SystemExit(f"unknown config {base!r}: choose from {', '.join(known)}")
    return base, dict(p.split("=", 1) for p in pairs)


def shared_tmp() -> str | None:
    """Where rank 0 writes its result: $HVDLM_BENCH_TMP (a shared folder under srun)."""
    return os.environ.get("HVDLM_BENCH_TMP") or None


def cores_per_rank(max_ranks_per_host: int) -> int:
    return max(1, len(os.sched_getaffinity(0)) // max(1, max_ranks_per_host))


def run_ranks(np_: int, cmd: Sequence[str], env: dict[str, str], hosts: int = 0,
              timeout: float = 600, share: int = 0) -> None:
    """Run `cmd` as np_ ranks: here on localhost, or spread over `hosts` emulated hosts.

    share: cores per rank (0: cores // ranks on this host); emulated hosts share this
    machine's cores, so their ranks are numbered as if all were on one host.
    """
    from hvdlm.cluster.launch import run_on_hosts
    if os.environ.get("HVDLM_BENCH_LAUNCHER") == "srun":
        return run_srun(np_, cmd, env, timeout)
    env = {**env, "HVDLM_BENCH_CORES_PER_RANK": str(share or cores_per_rank(np_))}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(report.ROOT), os.environ.get("PYTHONPATH")) if p)
    env.setdefault("HVDLM_BENCH_TORCH_PORT", str(free_port()))
    if hosts:
        per, extra = divmod(np_, hosts)
        plan = [(f"node{i + 1:02d}", per + (i < extra)) for i in range(hosts)]
        plan = [(h, n) for h, n in plan if n]
    else:
        plan = [("localhost", np_)]
    nice = os.environ.get("HVDLM_BENCH_NICE")
    if nice and nice != "0":  # e.g. -10 (root): other users' load disturbs the figures less
        cmd = ["nice", "-n", nice, *cmd]
    status = run_on_hosts(plan, list(cmd), netns=bool(hosts), env=env, timeout=timeout)
    if status != 0:
        raise RuntimeError(f"benchmark ranks failed (exit {status}): {' '.join(cmd)}")


def run_srun(np_: int, cmd: Sequence[str], env: dict[str, str], timeout: float) -> None:
    """Inside a Slurm allocation: one job step of np_ tasks, each a rank via hvdlm.launch.

    Ranks fill whole nodes first (the allocation's tasks per node); each node's ranks split
    its cores (benchmarks/ddp_loop.py: pin_rank).
    """
    per_node = int(os.environ.get("SLURM_NTASKS_PER_NODE", "0").split("(")[0] or 0) or 1
    nodes = max(1, -(-np_ // per_node))
    full = {**os.environ, **env, "HVDLM_BENCH_TORCH_PORT": env.get("HVDLM_BENCH_TORCH_PORT")
            or str(free_port()), "PYTHONPATH": os.pathsep.join(
                p for p in (str(report.ROOT), os.environ.get("PYTHONPATH")) if p)}
    argv = ["srun", f"--nodes={nodes}", f"--ntasks={np_}", "--kill-on-bad-exit=1",
            sys.executable, "-m", "hvdlm.launch", "--", *cmd]
    status = subprocess.run(argv, env=full, timeout=timeout).returncode
    if status != 0:
        raise RuntimeError(f"srun benchmark step failed (exit {status}): {' '.join(cmd)}")


# ---------------------------------------------------------------- inside a rank

def _horovod_start(config: str):
    import horovod.torch as hvd
    if config == "hvdlm":
        from hvdlm.training import distributed
        distributed.init("cpu")
    else:
        hvd.init()

    def allreduce(t):
        hvd.allreduce_(t, op=hvd.Sum, name="bench")

    return hvd.rank(), allreduce, hvd.shutdown


def _torch_start(config: str):
    import torch.distributed as dist
    from benchmarks.ddp_loop import init_torch_dist
    rank, _ = init_torch_dist()
    return rank, dist.all_reduce, dist.destroy_process_group


def worker(config: str, sizes: list[int], iters: int, warmup: int, result: str) -> None:
    """One rank: time `iters` in-place allreduces of each size; rank 0 writes the medians."""
    from benchmarks.ddp_loop import pin_rank
    import torch
    pin_rank()
    base, _ = split_config(config)
    start = _horovod_start if CONFIGS[base][0] == "horovod" else _torch_start
    rank, allreduce, stop = start(base)
    times = {}
    for size in sizes:
        t = torch.ones(size // 4, dtype=torch.float32)
        for _ in range(warmup):
            allreduce(t)
        samples = []
        for _ in range(iters):
            start = time.perf_counter()
            allreduce(t)
            samples.append(time.perf_counter() - start)
        times[size] = report.median(samples)
    stop()
    if rank == 0:
        Path(result).write_text(json.dumps({"times": times, "threads": torch.get_num_threads(),
                                            "env": _tuning_env()}))


def _tuning_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k.startswith(("HOROVOD_CYCLE", "HOROVOD_WAKE", "HOROVOD_FUSION", "HOROVOD_CACHE", "OMP_"))}


# ---------------------------------------------------------------- the driver

def measure(configs: list[str], np_: int, sizes: list[int], iters: int, rounds: int,
            hosts: int = 0) -> tuple[list[Row], dict[str, dict]]:
    """Median over rounds of each config's per-size time; rounds interleave the configs."""
    per: dict[str, dict[int, list[float]]] = {c: {s: [] for s in sizes} for c in configs}
    info: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="hvdlm-ar-", dir=shared_tmp()) as tmp:
        for rnd in range(rounds):
            for config in configs:
                result = Path(tmp, f"{configs.index(config)}-{rnd}.json")
                run_ranks(np_, [sys.executable, "-m", "benchmarks.allreduce", "--worker", config,
                                "--sizes", ",".join(map(str, sizes)), "--iters", str(iters),
                                "--result", str(result)], split_config(config)[1], hosts)
                got = json.loads(result.read_text())
                for size in sizes:
                    per[config][size].append(got["times"][str(size)])
                info[config] = {"threads": got["threads"], "env": got["env"]}
    rows = []
    for config in configs:
        for size in sizes:
            t = report.median(per[config][size])
            algbw = size / t / 1e9
            rows.append(Row(CONFIGS[split_config(config)[0]][0], np_, size, t, algbw,
                            algbw * 2 * (np_ - 1) / np_, config))
    return rows, info


def ratios(rows: list[Row], num: str = "hvdlm", den: str = "gloo") -> dict[int, float]:
    by = {(r.config, r.bytes): r.busbw_gbps for r in rows}
    return {s: by[(num, s)] / by[(den, s)] for (c, s) in by if c == num and (den, s) in by}


ISSUE_SIZES = (4 << 20, 16 << 20, 64 << 20)  # the sizes the median ratio is taken over


def median_ratio(r: dict[int, float]) -> float | None:
    """Median of the ratios at 4, 16 and 64 MiB (those measured), else over every size."""
    chosen = [v for s, v in r.items() if s in ISSUE_SIZES] or list(r.values())
    return report.median(chosen) if chosen else None


def write_report(out: Path, rows: list[Row], info: dict, args: argparse.Namespace) -> None:
    machine = report.machine_info()
    r = ratios(rows)
    rd = ratios(rows, "defaults")
    payload = {"results": [asdict(x) for x in rows], "np": args.np, "iters": args.iters,
               "rounds": args.rounds, "hosts": args.hosts, "rate": args.rate,
               "delay": args.delay, "configs": {c: {"backend": CONFIGS[split_config(c)[0]][0],
                                                    "what": CONFIGS[split_config(c)[0]][1], **info.get(c, {})}
                                                for c in info},
               "busbw_ratio_hvdlm_vs_torch": {str(k): v for k, v in r.items()},
               "median_ratio_hvdlm_vs_torch": median_ratio(r),
               "busbw_ratio_defaults_vs_torch": {str(k): v for k, v in rd.items()},
               "machine": machine}
    report.write_json(out, payload)
    table = report.md_table(["backend", "config", "np", "size (MiB)", "time (ms)",
                             "algbw (GB/s)", "busbw (GB/s)"],
                            [(x.backend, x.config, x.np, x.bytes / 2**20, x.time_s * 1e3,
                              x.algbw_gbps, x.busbw_gbps) for x in rows])
    where = (f"{args.hosts} emulated hosts, rate {args.rate}, delay {args.delay}"
             if args.hosts else "one machine, loopback")
    text = (f"{args.np} ranks ({where}), each pinned to an equal share of the cores; "
            f"in-place float32 SUM; median of {args.iters} calls after warm-up, then median of "
            f"{args.rounds} interleaved rounds.\n\n")
    if r:
        text += ("Bus bandwidth of Horovod with hvdlm's settings over torch.distributed Gloo: "
                 + ", ".join(f"{s / 2**20:g} MiB {v:.2f}x" for s, v in sorted(r.items()))
                 + f"; median at 4/16/64 MiB {payload['median_ratio_hvdlm_vs_torch']:.2f}x.")
    if rd:
        text += (" Horovod's defaults: " + ", ".join(f"{v:.2f}x" for _, v in sorted(rd.items()))
                 + ".")
    cfgs = "\n".join(f"- `{c}`: {CONFIGS[split_config(c)[0]][1]}; torch threads "
                     f"{info[c]['threads']}; env {info[c]['env'] or '{}'}" for c in info)
    report.write_md(out, "Allreduce bandwidth", [("Results", text + "\n\n" + table),
                                                 ("Configurations", cfgs),
                                                 ("Plot", "![busbw](allreduce.png)")], machine)
    series = {}
    for config in info:
        mine = sorted((x.bytes, x.busbw_gbps) for x in rows if x.config == config)
        series[f"{CONFIGS[split_config(config)[0]][0]} ({config})"] = ([b / 2**20 for b, _ in mine],
                                                      [v for _, v in mine])
    report.line_plot(out / "allreduce.png", series, xlabel="message size (MiB)",
                     ylabel="bus bandwidth (GB/s)", logx=True,
                     title=f"allreduce, {args.np} ranks, {where}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.allreduce", description=__doc__.split("\n")[0])
    p.add_argument("--np", type=int, default=2)
    p.add_argument("--sizes", default="4M,16M,64M", help="comma list: 4M,16M,64M or bytes")
    p.add_argument("--out", default="runs/allreduce")
    p.add_argument("--backends", default="horovod,torch", help="horovod,torch")
    p.add_argument("--configs", help="explicit config list (hvdlm,defaults,gloo)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="interleaved repeats of every config")
    p.add_argument("--hosts", type=int, default=0, help="emulated hosts (root; see scripts/)")
    p.add_argument("--rate", default="1gbit", help="with --hosts: per-host egress rate")
    p.add_argument("--delay", default="0ms", help="with --hosts: one-way delay")
    add_common(p)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--launcher", choices=["local", "srun"], default="local",
                   help="local: ranks on this machine (or --hosts); srun: job steps of the "
                        "current Slurm allocation")
    p.add_argument("--nice", type=int, default=0,
                   help="run the ranks at this nice level (root: -10 keeps other load out)")


def apply_common(args: argparse.Namespace) -> None:
    """Pass the launcher choices to run_ranks through the environment (workers ignore them)."""
    if args.nice:
        os.environ["HVDLM_BENCH_NICE"] = str(args.nice)
    if args.launcher == "srun":
        os.environ["HVDLM_BENCH_LAUNCHER"] = "srun"
        os.environ.setdefault("HVDLM_BENCH_TMP", str(Path(args.out).resolve()))
        Path(args.out).mkdir(parents=True, exist_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    if args.worker:
        worker(args.worker, sizes, args.iters, max(2, args.iters // 5), args.result)
        return 0
    apply_common(args)
    configs = (args.configs.split(",") if args.configs else
               [c for b in args.backends.split(",") for c in BACKEND_CONFIGS[b.strip()]])
    if args.hosts:
        emulate("up", args.hosts, args.rate, args.delay)
    try:
        rows, info = measure(configs, args.np, sizes, args.iters, args.rounds, args.hosts)
    finally:
        if args.hosts:
            emulate("down")
    write_report(Path(args.out), rows, info, args)
    for x in rows:
        print(f"{x.backend:8s} {x.config:9s} np={x.np} {x.bytes / 2**20:8.2f} MiB "
              f"{x.time_s * 1e3:9.2f} ms  busbw {x.busbw_gbps:.3f} GB/s")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def emulate(action: str, hosts: int = 0, rate: str = "", delay: str = "") -> None:
    """scripts/emulate-cluster.sh up N --rate R [--delay D] | down."""
    script = str(report.ROOT / "scripts" / "emulate-cluster.sh")
    if action == "up" and Path("/run/netns/node01").exists():
        # Someone's cluster is up: neither reshape nor (in `finally`) remove it under them.
        raise SystemExit("an emulated cluster is already up; bring it down first "
                         "(scripts/emulate-cluster.sh down) if it is not in use")
    cmd = [script, "up", str(hosts), "--rate", rate] if action == "up" else [script, "down"]
    if action == "up" and delay and delay not in ("0", "0ms"):
        cmd += ["--delay", delay]
    subprocess.run(cmd, check=True, timeout=120)


if __name__ == "__main__":
    sys.exit(main())
