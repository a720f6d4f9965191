"""kill -9 from outside, at the worst moments: mid gradient allreduce, mid checkpoint write.

The test sends the signal itself when it sees the moment (no hook inside the trainer): a rank
streaming its gradients (its write counter climbing), rank 0 with its next checkpoint on disk
under the temporary name (frozen there with SIGSTOP, then killed). The job must end, non-zero and soon; the next `--resume auto` must finish
bitwise equal to a run that was never interrupted, and leave no debris.

The model is a 3.6M-parameter GPT: each step's allreduce moves 14 MB per rank, each checkpoint
is 43 MB. The allreduce test shapes the loopback link of its own network namespace (tbf) so
that a step's transfer takes about half a second.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import torch

from hvdlm.training import checkpoint
from hvdlm.training.record.logs import read_metrics
from tests.conftest import ROOT, horovodrun

pytestmark = pytest.mark.horovod

BIG = ["model.n_layer=2", "model.n_head=4", "model.n_embd=384", "model.seq_len=32",
       "train.micro_batch=2", "train.warmup_steps=0", "train.log_interval=1",
       "train.eval_interval=100", "train.max_steps=3"]
SHAPED_LO = "ip link set lo up && tc qdisc add dev lo root tbf rate 400mbit burst 256kb latency 1s"


def train_argv(data: Path, run: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "hvdlm.train", "--data", str(data), "--out", str(run), *BIG,
            *overrides]


def launcher(np_: int = 2) -> list[str]:
    runner = Path(sys.executable).with_name("horovodrun")
    return [str(runner), "-np", str(np_), "-H", f"localhost:{np_}", "--gloo"]


def final_params(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(checkpoint.checkpoint_dir(run) / "step-00000003.pt").model


def assert_bitwise(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def ranks(parent: subprocess.Popen, n: int = 2, timeout: float = 60) -> dict[int, psutil.Process]:
    """The training processes under `parent`, by Horovod rank."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for p in psutil.Process(parent.pid).children(recursive=True):
            try:
                if "hvdlm.train" in " ".join(p.cmdline()) and "HOROVOD_RANK" in p.environ():
                    found[int(p.environ()["HOROVOD_RANK"])] = p
            except psutil.Error:  # a helper process that already exited
                pass
        if len(found) == n:
            return found
        time.sleep(0.1)
    raise AssertionError("ranks did not start")


def wait_for(condition, what: str, timeout: float = 120, every: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def latest(run: Path) -> str:
    try:
        return (checkpoint.checkpoint_dir(run) / "latest").read_text()
    except FileNotFoundError:
        return ""


def bytes_written(proc: psutil.Process) -> int:
    return proc.io_counters().write_chars  # includes socket writes: Gloo's sends


@contextmanager
def launched(argv: list[str]) -> Iterator[subprocess.Popen]:
    """The job, stderr captured; it and every process under it killed however the test ends."""
    parent = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    tree = psutil.Process(parent.pid)
    try:
        yield parent
    finally:
        if parent.poll() is None:  # the test failed before the job ended
            for proc in [*tree.children(recursive=True), tree]:
                with suppress(psutil.Error):
                    proc.kill()
            parent.communicate()


def ended(parent: subprocess.Popen, timeout: float = 60) -> tuple[int, str, float]:
    started = time.monotonic()
    _, stderr = parent.communicate(timeout=timeout)
    return parent.returncode, stderr, time.monotonic() - started


def resume_and_check(data: Path, run: Path, reference: Path, resumed_from: int) -> None:
    horovodrun(2, *train_argv(data, run, "--resume", "auto"), timeout=240)
    assert [r["resumed_from"] for r in read_metrics(run) if "resumed_from" in r] == [resumed_from]
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3]  # each once
    assert_bitwise(final_params(run), final_params(reference))
    assert not [p.name for p in checkpoint.checkpoint_dir(run).iterdir() if "tmp" in p.name]


@pytest.fixture(scope="module")
def reference(byte_dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    horovodrun(2, *train_argv(byte_dataset, run), timeout=240)
    return run


@pytest.mark.netns  # its own network namespace, root
def test_rank_killed_mid_allreduce_ends_the_job_and_resumes_bitwise(byte_dataset, reference,
                                                                    tmp_path):
    if os.geteuid() != 0 or not shutil.which("tc"):
        pytest.skip("shaping a link needs root and tc (its own network namespace)")
    run = tmp_path / "run"
    cmd = shlex.join([*launcher(), *train_argv(byte_dataset, run, "train.ckpt_interval=2")])
    with launched(["unshare", "--net", "sh", "-c", f"{SHAPED_LO} && exec {cmd}"]) as parent:
        victim = ranks(parent)[1]
        wait_for(lambda: latest(run) == "step-00000002.pt", "the step-2 checkpoint")
        # In flight: rank 1 wrote over 1 MB to its sockets within the last ~20 ms, and a step's
        # 14 MB take ~0.5 s on this link.
        window = [bytes_written(victim)] * 10

        def streaming() -> bool:
            window.append(bytes_written(victim))
            return window.pop(0) + 2**20 < window[-1]
        wait_for(streaming, "rank 1 streaming gradients", every=0.002)
        victim.send_signal(signal.SIGKILL)
        code, stderr, seconds = ended(parent)
    assert code != 0 and seconds < 60, (code, seconds)
    assert "Process name: 1" in stderr and "Exit code: 137" in stderr, stderr[-2000:]
    assert latest(run) == "step-00000002.pt"  # step 3 never finished
    resume_and_check(byte_dataset, run, reference, resumed_from=2)


def test_rank_0_killed_mid_checkpoint_write_leaves_the_previous_one(byte_dataset, reference,
                                                                    tmp_path):
    run = tmp_path / "run"
    folder = checkpoint.checkpoint_dir(run)

    def saving() -> int:
        """The step whose checkpoint rank 0 has on disk under its temporary name, or 0."""
        if not folder.is_dir():
            return 0
        temps = [e.name for e in os.scandir(folder) if ".pt.tmp" in e.name]
        return int(temps[0][len(".step-"):][:8]) if temps else 0

    with launched([*launcher(), *train_argv(byte_dataset, run, "train.ckpt_interval=1")]) as parent:
        victim = ranks(parent)[0]
        caught = 0
        while not caught:
            wait_for(lambda: saving() > 1 or parent.poll() is not None, "a checkpoint being saved")
            assert parent.poll() is None, f"no save was caught: {ended(parent)}"
            # Frozen, rank 0 stays mid-save however late this process is scheduled; if the save
            # finished between the sight and the stop, let it go on and catch the next one.
            try:
                victim.suspend()
            except psutil.NoSuchProcess:
                pytest.fail(f"rank 0 ended by itself: {ended(parent)}")
            caught = saving()
            if caught:
                victim.kill()
            else:
                victim.resume()
        code, stderr, seconds = ended(parent)
    assert code != 0 and seconds < 60, (code, seconds)
    assert "Process name: 0" in stderr and "Exit code: 137" in stderr, stderr[-2000:]
    assert latest(run) == f"step-{caught - 1:08d}.pt"
    assert [p.name for p in folder.iterdir() if "tmp" in p.name]  # the debris it left
    resume_and_check(byte_dataset, run, reference, resumed_from=caught - 1)
