"""hvdlm.training.malloc: the settings are applied, as glibc's own accounting shows: a 16 MiB
block comes from the heap instead of a fresh mmap, and stays there once freed (not trimmed),
so touching it again does not page-fault. How many faults that saves is a measurement:
`python -m benchmarks.malloc_faults`."""
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from hvdlm.config import load_config
from hvdlm.training import malloc, trainer
from tests.conftest import ROOT

MIB = 1 << 20
# Malloc and free one 16 MiB block (over glibc's 128 KiB mmap threshold, under hvdlm's 32 MiB);
# print whether the settings were taken, then from mallinfo: the block's bytes that were
# mmapped, and the heap's growth while it was held and after it was freed.
PROBE = textwrap.dedent("""
    import ctypes, sys
    from hvdlm.training import malloc
    kept = malloc.keep_freed_memory() if sys.argv[1] == "keep" else None
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo"):
        sys.exit(print(kept, "not-glibc"))
    name = "mallinfo2" if hasattr(libc, "mallinfo2") else "mallinfo"  # glibc >= 2.33
    size_t = ctypes.c_size_t if name == "mallinfo2" else ctypes.c_int
    class Info(ctypes.Structure):
        _fields_ = [(f, size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                          "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    info = getattr(libc, name)
    info.restype = Info
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    before = info()
    block = libc.malloc(16 << 20)
    held = info()
    libc.free(block)
    freed = info()
    print(kept, held.hblkhd - before.hblkhd, held.arena - before.arena, freed.arena - before.arena)
""")


def probe(mode: str, **env: str) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", **env}  # no MALLOC_* or GLIBC_TUNABLES from this environment
    return subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, check=True, text=True,
                          capture_output=True, env=env).stdout.split()


def test_the_block_comes_from_the_heap_and_stays_there_once_freed():
    kept, *figures = probe("keep")
    if figures == ["not-glibc"]:
        assert kept == "False"  # outside glibc the allocator is left as it is
        return
    mmapped, held, freed = map(int, figures)
    assert kept == "True"
    assert mmapped == 0 and held >= 16 * MIB  # M_MMAP_THRESHOLD raised
    assert freed >= 16 * MIB  # M_TRIM_THRESHOLD raised: the freed top is not handed back


def test_glibc_defaults_mmap_the_block():
    """The control: without the settings the same block is a fresh mmap, given back on free."""
    kept, *figures = probe("default")
    if figures != ["not-glibc"]:
        mmapped, held, freed = map(int, figures)
        assert mmapped >= 16 * MIB and held < MIB and freed < MIB


def test_the_users_malloc_settings_win():
    assert malloc.keep_freed_memory({"MALLOC_TRIM_THRESHOLD_": "131072"}) is False
    assert malloc.keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}) is False
    kept, *figures = probe("keep", MALLOC_MMAP_THRESHOLD_="131072")  # glibc's default, fixed
    assert kept == "False"
    if figures != ["not-glibc"]:
        assert int(figures[0]) >= 16 * MIB  # glibc's own behaviour: an mmap


class Started(Exception):
    """Raised where a run's set-up is past the memory settings."""


def started(rank: int) -> None:
    raise Started


@pytest.mark.parametrize("keep", [True, False])
def test_train_keeps_freed_memory_on_cpu_unless_the_config_says_no(keep, monkeypatch):
    """train.keep_freed_memory=false is the off switch (it was HVDLM_KEEP_FREED_MEMORY=0)."""
    calls = []
    monkeypatch.setattr(trainer.distributed, "init",
                        lambda device, run, **_: SimpleNamespace(device=torch.device("cpu"),
                                                                       rank=0))
    monkeypatch.setattr(malloc, "keep_freed_memory", lambda: calls.append("kept"))
    monkeypatch.setattr(trainer, "setup_logging", started)
    cfg = load_config(None, [f"train.keep_freed_memory={str(keep).lower()}"])
    with pytest.raises(Started):
        trainer.train(cfg, "DATA", "RUN")
    assert calls == (["kept"] if keep else [])


def test_the_page_fault_benchmark_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.malloc_faults", "--rounds", "1",
                           "--repeats", "1", "--out", tmp_path], cwd=ROOT, text=True,
                          capture_output=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "minor page faults per round of 64 x 1 MiB: glibc defaults" in proc.stdout
    assert '"hvdlm_faults_per_round"' in (tmp_path / "report.json").read_text()
