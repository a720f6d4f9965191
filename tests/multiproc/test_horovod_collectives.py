"""Real Horovod ranks (horovodrun -np 2, Gloo) agree on allreduce, broadcast and allgather."""
import sys
from pathlib import Path

import pytest

from tests.conftest import horovodrun

pytestmark = pytest.mark.horovod
HERE = Path(__file__).parent


def test_two_ranks_collectives():
    proc = horovodrun(2, sys.executable, HERE / "collectives_check.py", timeout=120)
    for rank in (0, 1):
        assert f"rank {rank} of 2: collectives ok" in proc.stdout


def test_build_lists_pytorch_and_gloo():
    import subprocess
    out = subprocess.run([str(Path(sys.executable).with_name("horovodrun")), "--check-build"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "[X] PyTorch" in out and "[X] Gloo" in out


@pytest.mark.parametrize("wake", ["1", "0"])
def test_wake_on_enqueue_starts_a_cycle_at_once(wake):
    """The build's wake-on-enqueue patch: with 3 s idle cycles, 8 allreduces in a row take
    under one cycle when an enqueue wakes the background thread, and more than 3 cycles'
    worth without it (the control, which shows the patch is what makes the difference)."""
    import re
    proc = horovodrun(2, sys.executable, HERE / "wake_check.py", timeout=180,
                      env={"HOROVOD_CYCLE_TIME": "3000", "HOROVOD_WAKE_ON_ENQUEUE": wake})
    took = [float(s) for s in re.findall(r"8 allreduces in ([\d.]+) s", proc.stdout)]
    assert len(took) == 2, proc.stdout
    if wake == "1":
        assert max(took) < 2.0, took
    else:
        assert min(took) > 9.0, took


def test_small_allreduce_on_a_shared_core_costs_no_scheduler_tick():
    """The build's Gloo patch: with both ranks on one core, a 64 KiB allreduce through
    Horovod costs about what torch.distributed's Gloo does, not scheduler ticks (before the
    patch: 7.9 ms against torch's 0.4 ms here, two 4 ms ticks at HZ=250; after: 1.1 ms against
    0.4-1.5 ms). The bound, 3x torch's median from the same run but at least 2.5 ms, leaves
    room for Horovod's own negotiation and for a loaded machine."""
    import re

    from benchmarks.harness import free_port
    proc = horovodrun(2, sys.executable, HERE / "shared_core_check.py", timeout=180,
                      env={"HVDLM_TEST_TORCH_PORT": str(free_port())})
    got = re.findall(r"horovod ([\d.]+) ms, torch ([\d.]+) ms", proc.stdout)
    assert len(got) == 2, proc.stdout
    for horovod_ms, torch_ms in got:
        assert float(horovod_ms) < max(2.5, 3 * float(torch_ms)), got
