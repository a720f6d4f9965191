"""hvdlm.training.faults: the environment asks for faults once, at the start; the pause holds a
rank at an exact step until it is asked to stop, so tests signal a run without racing it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
import torch

import hvdlm.train
import hvdlm.training.trainer
from hvdlm.errors import EXIT_STOPPED, UsageError
from hvdlm.training import faults
from tests.conftest import ROOT, TINY_RUN, logged_steps


def fake_trainer(rank: int, step: int) -> SimpleNamespace:
    return SimpleNamespace(world=SimpleNamespace(rank=rank), step=step,
                           stop=SimpleNamespace(signal=None))


def test_no_fault_asked_adds_no_callback():
    assert faults.from_environ({}) == []
    assert faults.from_environ({"HVDLM_FAULT_KILL": "", "PATH": "/bin"}) == []


@pytest.mark.parametrize("name", ["HVDLM_FAULT_PAUSE", "HVDLM_FAULT_KILL"])
def test_a_malformed_fault_is_a_usage_error_naming_it(name):
    with pytest.raises(UsageError, match=f"{name} must be RANK:STEP"):
        faults.from_environ({name: "0:three"})


def test_an_unknown_fault_variable_is_refused():
    with pytest.raises(UsageError, match="unknown fault variable HVDLM_FAULT_KIL "):
        faults.from_environ({"HVDLM_FAULT_KIL": "0:3"})


def test_a_run_loads_fault_injection_only_when_a_fault_is_asked_for(monkeypatch):
    """`python -m hvdlm.train` without HVDLM_FAULT_*: the faults module is never imported
    (here it cannot be); with one, its callback reaches the trainer."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, hvdlm.train; "
                             "print('hvdlm.training.faults' in sys.modules)"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False"
    handed = []
    monkeypatch.setattr(hvdlm.training.trainer, "train",
                        lambda cfg, data, out, resume, callbacks: handed.append(callbacks) or 0)
    for name in [n for n in os.environ if n.startswith("HVDLM_FAULT_")]:
        monkeypatch.delenv(name)
    argv = ["--data", "D", "--out", "R"]
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "hvdlm.training.faults", None)  # an import would raise
        assert hvdlm.train.main(argv) == 0
    monkeypatch.setenv("HVDLM_FAULT_PAUSE", "0:2")
    assert hvdlm.train.main(argv) == 0
    assert handed[0] == [] and [type(c) for c in handed[1]] == [faults.InjectedFaults]


def test_pause_holds_its_rank_and_step_until_a_stop_request():
    [callback] = faults.from_environ({"HVDLM_FAULT_PAUSE": "1:4"})
    for rank, step in ((0, 4), (1, 3), (1, 5)):  # elsewhere: no wait
        trainer = fake_trainer(rank, step)
        callback.on_step_start(trainer)
        assert trainer.stop.signal is None
    trainer = fake_trainer(1, 4)
    # The "signal handler" runs later, from another thread: the pause must outlast it.
    timer = threading.Timer(0.3, lambda: setattr(trainer.stop, "signal", signal.SIGUSR1))
    timer.start()
    callback.on_step_start(trainer)
    assert trainer.stop.signal == signal.SIGUSR1
    timer.join()


def test_signal_to_a_paused_run_stops_it_after_exactly_one_more_step(byte_dataset, tmp_path):
    """A world of one, paused after step 2 (with 20 steps to go): SIGUSR1 then stops it after
    step 3 with a checkpoint, whatever the machine's speed."""
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "hvdlm.train", "--data", byte_dataset, "--out", run, *TINY_RUN,
            "train.max_steps=20", "train.ckpt_interval=100", "train.eval_interval=100"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "HVDLM_FAULT_PAUSE": "0:2"})
    try:
        deadline = time.monotonic() + 120  # a guard against a hang, not a speed bound
        while not (run / "metrics.jsonl").exists() or len(logged_steps(run)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_STOPPED, err
    assert "rank 0 paused after step 2 until asked to stop" in err
    assert [r["step"] for r in logged_steps(run)] == [1, 2, 3]
    saved = sorted((run / "checkpoints").glob("step-*.pt"))
    assert [p.name for p in saved] == ["step-00000003.pt"]
    assert torch.load(saved[0], weights_only=True)["step"] == 3
