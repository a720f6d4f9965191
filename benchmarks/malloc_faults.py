"""Page faults of a CPU step's memory churn: glibc's defaults against hvdlm's malloc settings.

    python -m benchmarks.malloc_faults [--rounds 10] [--repeats 3] [--out runs/malloc_faults]

Each figure comes from a fresh process (malloc settings last for the process): it allocates,
touches and frees 64 tensors of 1 MiB, as a step's activations do, once to warm up and then
`--rounds` times, and reports minor page faults per round (/proc/self/stat). With glibc's
defaults the blocks are fresh mmaps, or the freed heap top is trimmed, so every round faults
its 64 MiB back in (~3,300 4-KiB pages here); with `hvdlm.training.malloc.keep_freed_memory`
a round faulted 80-260 pages. The two settings alternate and the figures are medians over
`--repeats`. Linux only. Writes OUT/report.json. (tests/training/test_malloc.py checks that the
setting is applied; this measures what it saves.)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from benchmarks import ROOT, report

SETTINGS = ("glibc", "hvdlm")
CHURN = textwrap.dedent("""
    import sys, torch
    from hvdlm.training import malloc
    def faults():
        return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])
    if sys.argv[1] == "hvdlm":
        assert malloc.keep_freed_memory(), "malloc did not take the settings"
    def churn():
        blocks = [torch.ones(256 * 1024) for _ in range(64)]
        del blocks
    churn()
    before = faults()
    for _ in range(int(sys.argv[2])):
        churn()
    print((faults() - before) / int(sys.argv[2]))
""")


def faults_per_round(setting: str, rounds: int) -> float:
    # one thread: no thread-pool stacks; no MALLOC_* or GLIBC_TUNABLES from this environment
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHURN, setting, str(rounds)], cwd=ROOT,
                         check=True, text=True, capture_output=True, env=env).stdout
    return float(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.malloc_faults",
                                description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=10, help="churn rounds per process")
    p.add_argument("--repeats", type=int, default=3, help="processes per setting")
    p.add_argument("--out", default="runs/malloc_faults")
    args = p.parse_args(argv)
    got: dict[str, list[float]] = {s: [] for s in SETTINGS}
    for _ in range(args.repeats):
        for setting in SETTINGS:
            got[setting].append(faults_per_round(setting, args.rounds))
    result = {f"{s}_faults_per_round": report.median(got[s]) for s in SETTINGS}
    result.update(rounds=args.rounds, repeats=args.repeats, all=got,
                  machine=report.machine_info())
    result["ratio"] = result["glibc_faults_per_round"] / max(result["hvdlm_faults_per_round"], 1)
    report.write(Path(args.out), result)
    print(f"minor page faults per round of 64 x 1 MiB: glibc defaults "
          f"{result['glibc_faults_per_round']:,.0f}, hvdlm's malloc settings "
          f"{result['hvdlm_faults_per_round']:,.0f}: {result['ratio']:.1f}x fewer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
