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
