"""Training across emulated hosts equals training on one host with the same global batch.

2 hosts x micro-batch 4 and 4 hosts x micro-batch 2 against 1 rank x micro-batch 8: the losses
of every step agree to 1e-5 relative and the parameters to 1e-5 in relative norm.
"""
import sys

import pytest

from tests.conftest import run_module
from tests.multihost.test_emulated_cluster import cluster  # noqa: F401  (module fixture)
from tests.multiproc.test_train import TINY, final_params, flat, losses, train

pytestmark = [pytest.mark.netns, pytest.mark.horovod]
COMMON = ["train.max_steps=4", "model.dropout=0.0", "train.precision=fp32"]


@pytest.fixture(scope="module")
def single_host(byte_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("single") / "run"
    train(1, byte_dataset, run, *COMMON, "train.micro_batch=8")
    return run


@pytest.mark.parametrize("n_hosts", [2, 4])
def test_hosts_equal_single_host(n_hosts, cluster, single_host, byte_dataset, tmp_path):  # noqa: F811
    hosts = ",".join(f"node0{i}:1" for i in range(1, n_hosts + 1))
    run = tmp_path / "run"
    proc = run_module("hvdlm.launch", "--hosts", hosts, "--netns", "--timeout", "60",
                      "--job-timeout", "240", "--", sys.executable, "-m", "hvdlm.train",
                      "--data", byte_dataset, "--out", run, *TINY, *COMMON,
                      f"train.micro_batch={8 // n_hosts}", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"world size {n_hosts}" in (run / "log.txt").read_text()
    ref, got = losses(single_host), losses(run)
    assert len(got) == len(ref) == 4
    for a, b in zip(ref, got):
        assert abs(a - b) / abs(a) <= 1e-5, (ref, got)
    a, b = flat(final_params(single_host, 4)), flat(final_params(run, 4))
    assert ((a - b).norm() / a.norm()).item() <= 1e-5
