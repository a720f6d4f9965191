"""Test-wide fixtures and helpers; the CI rule (a required test that does not run fails in CI)
is the plugin tests/ci_rule.py, loaded here."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.forkserver import FORK_SERVER

ROOT = Path(__file__).resolve().parents[1]
# the `attacker` fixture (a real second Unix user); the CI rule and the required markers
pytest_plugins = ["tests.attacker", "tests.ci_rule"]


def run_module(module: str, *args: str, timeout: float = 300, env: dict | None = None,
               check: bool = False, cwd: Path | None = None,
               fresh: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m module args...` as its own process; text output captured. The process
    is forked from a server that has torch and hvdlm imported (tests/forkserver.py) unless
    `fresh` or the environment changes what an interpreter reads at start-up."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    fork = not fresh and not os.environ.get("HVDLM_TEST_NO_FORK")  # the latter: to compare
    if fork and FORK_SERVER.serves(full_env):
        proc = FORK_SERVER.run(module, list(map(str, args)), full_env, Path(cwd or ROOT),
                               timeout, ROOT)
    else:
        proc = subprocess.run([sys.executable, "-m", module, *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, env=full_env,
                              cwd=cwd or ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def horovodrun(np_: int, *cmd: str, timeout: float = 300, env: dict | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run `horovodrun -np N -H localhost:N --gloo CMD...` with the venv's horovodrun."""
    runner = Path(sys.executable).with_name("horovodrun")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    argv = [str(runner), "-np", str(np_), "-H", f"localhost:{np_}", "--gloo", *map(str, cmd)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"horovodrun exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def logged_steps(run: Path) -> list[dict]:
    """RUN/metrics.jsonl's training-step records (those with a loss), read while it grows."""
    from hvdlm.training.record.logs import read_metrics
    return [r for r in read_metrics(run) if "loss" in r]


def small_corpus(dest: Path, n_files: int = 24) -> Path:
    """A real corpus no one here wrote: the first `n_files` modules of the stdlib's json,
    email and logging packages, copied so tests never depend on a changing folder."""
    import shutil
    import sysconfig
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for pkg in ("json", "email", "logging") for p in (stdlib / pkg).glob("*.py"))
    dest.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files[:n_files]):
        shutil.copy(path, dest / f"{i:03d}_{path.name}")
    return dest


@pytest.fixture
def own_signal_handlers():
    """A Trainer in this process installs SIGTERM/SIGUSR1 handlers; pytest's come back after."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture(scope="session")
def byte_dataset(tmp_path_factory) -> Path:
    """A small byte-tokenized dataset (train + val shards) made by hvdlm.preprocess."""
    root = tmp_path_factory.mktemp("byte_dataset")
    corpus = small_corpus(root / "corpus")
    out = root / "data"
    run_module("hvdlm.preprocess", corpus, "--out", out, "--tokenizer", "byte",
               "--val-fraction", "0.15", "--seed", "0", check=True)
    return out


TINY_SEQ_LEN = 32
TINY_RUN = ["model.n_layer=1", "model.n_embd=16", "model.n_head=2",
            f"model.seq_len={TINY_SEQ_LEN}", "train.max_steps=4", "train.micro_batch=4",
            "train.warmup_steps=0", "train.eval_interval=4", "train.ckpt_interval=4",
            "train.log_interval=1"]


def trained_run(dataset: Path, folder: Path, *settings: str) -> Path:
    """FOLDER/run: `hvdlm.train` on `dataset` with these settings, in one process."""
    run = folder / "run"
    run_module("hvdlm.train", "--data", dataset, "--out", run, *settings, check=True, timeout=240)
    return run


@pytest.fixture(scope="session")
def tiny_run(byte_dataset, tmp_path_factory) -> Path:
    """A 4-step GPT trained on the byte dataset in one process (a world of one); evaluate
    and generate tests read it."""
    return trained_run(byte_dataset, tmp_path_factory.mktemp("tiny_run"), *TINY_RUN)


@pytest.fixture(scope="session")
def bpe_dataset(tmp_path_factory) -> Path:
    """Another dataset, with a BPE tokenizer: not the one the tiny run was trained with."""
    root = tmp_path_factory.mktemp("bpe_dataset")
    corpus = small_corpus(root / "corpus", n_files=4)
    run_module("hvdlm.preprocess", corpus, "--out", root / "data", "--tokenizer", "bpe",
               "--vocab-size", "300", "--val-fraction", "0.25", "--seed", "0", check=True)
    return root / "data"
