"""hvdlm.cluster.malloc: freed memory stays in the process, so touching it again does not fault."""
import subprocess
import sys
import textwrap

import pytest

from hvdlm.cluster import malloc
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="counts page faults in /proc")

# Allocate, touch and free 64 blocks of 1 MiB, ten times; print minor page faults per round.
CHURN = textwrap.dedent("""
    import sys, torch
    from hvdlm.cluster import malloc
    def faults():
        return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])
    kept = malloc.keep_freed_memory() if sys.argv[1] == "keep" else None
    def churn():
        blocks = [torch.ones(256 * 1024) for _ in range(64)]
        del blocks
    churn()
    before = faults()
    for _ in range(10):
        churn()
    print(kept, (faults() - before) / 10)
""")


def churn_faults(mode: str, **env: str) -> tuple[str, float]:
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", **env}  # one thread: no pool stacks
    out = subprocess.run([sys.executable, "-c", CHURN, mode], cwd=ROOT, check=True, text=True,
                         capture_output=True, env=env).stdout
    kept, faults = out.split()
    return kept, float(faults)


def test_kept_memory_is_reused_without_page_faults():
    _, default = churn_faults("default")
    kept, faults = churn_faults("keep")
    assert kept == "True"
    # glibc trims the freed 64 MiB and faults it back in (~3,300 pages a round here); kept,
    # a round faults 80-260 pages (heap growth as Python's own objects interleave)
    assert default > 1000
    assert faults < default / 4


def test_the_users_malloc_settings_and_the_off_switch_win():
    assert malloc.keep_freed_memory({"MALLOC_TRIM_THRESHOLD_": "131072"}) is False
    assert malloc.keep_freed_memory({"HVDLM_KEEP_FREED_MEMORY": "0"}) is False
    kept, faults = churn_faults("keep", HVDLM_KEEP_FREED_MEMORY="0")
    assert kept == "False" and faults > 1000
