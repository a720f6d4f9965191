"""Tests of hvdlm.launch (hvdlm.cluster.launch): usage errors, a rank's rendezvous deadline,
signals; then real Horovod ranks started the way srun starts them (one launcher per task) and
with --hosts.

    .venv/bin/python -m pytest tests/cluster/test_launch.py
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import slurm_env
from tests.conftest import ROOT, run_module

CHECK = ROOT / "tests" / "multihost" / "allreduce_check.py"


def test_no_task_environment_is_a_usage_error():
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    proc = subprocess.run([sys.executable, "-m", "hvdlm.launch", "--", "true"],
                          capture_output=True, text=True, env=clean, cwd=ROOT, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "srun" in proc.stderr


@pytest.mark.parametrize("args, message", [
    ([], "give the command after --"),
    (["--timeout", "0", "--", "true"], "--timeout must be positive"),
    (["--netns", "--", "true"], "need --hosts"),
    (["--hosts", "a:1,a:1", "--", "true"], "host listed twice"),
])
def test_cli_usage_errors(args, message):
    proc = run_module("hvdlm.launch", *args, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_rank_waiting_for_rendezvous_times_out_in_one_line(tmp_path):
    env = {**os.environ, **slurm_env(1, 1, 0, "cn1", "2", 2), "HVDLM_RENDEZVOUS_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "hvdlm.launch", "--timeout", "1", "--", "true"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "rendezvous timed out after 1 s" in proc.stderr


def test_rendezvous_dir_flag_wins_over_the_environment(tmp_path):
    """--rendezvous-dir is where rank 1 looks; $HVDLM_RENDEZVOUS_DIR is the fallback."""
    env = {**os.environ, **slurm_env(1, 1, 0, "cn1", "2", 2),
           "HVDLM_RENDEZVOUS_DIR": str(tmp_path / "from-env")}
    proc = subprocess.run([sys.executable, "-m", "hvdlm.launch", "--timeout", "1",
                           "--rendezvous-dir", str(tmp_path / "from-flag"), "--", "true"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"file {tmp_path / 'from-flag' / 'local.4242.0.0'})" in proc.stderr
    assert (tmp_path / "from-flag").is_dir() and not (tmp_path / "from-env").exists()


@pytest.mark.horovod
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_an_interface_without_an_address_is_one_line(tmp_path, how):
    env = {**os.environ, **slurm_env(0, 0, 0, "cn1", "1", 1)}
    args = ["--rendezvous-dir", str(tmp_path)]
    if how == "flag":
        args += ["--iface", "nosuch0"]
    else:
        env["HVDLM_IFACE"] = "nosuch0"
    proc = subprocess.run([sys.executable, "-m", "hvdlm.launch", *args, "--", "true"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "hvdlm.launch: error: interface nosuch0 (--iface) has no IPv4 address here"]


def test_task_options_are_refused_with_hosts():
    proc = run_module("hvdlm.launch", "--hosts", "a:1", "--iface", "lo", "--", "true",
                      timeout=30)
    assert proc.returncode == 2 and "are for srun/submitit tasks, not --hosts" in proc.stderr


@pytest.mark.horovod
def test_signals_reach_the_command_and_its_status_comes_back(tmp_path):
    pytest.importorskip("horovod.runner.http.http_server")
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGUSR1, lambda *a: sys.exit(7))\n"
              "print('ready', flush=True)\n"
              "time.sleep(30)\n")
    env = {**os.environ, **slurm_env(0, 0, 0, "cn1", "1", 1), "HVDLM_RENDEZVOUS_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "hvdlm.launch", "--", sys.executable, "-c",
                             script], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=10) == 7
    assert not list(tmp_path.iterdir())  # rank 0 removed its rendezvous file


def srun_like(ntasks: int, tmp_path: Path, cmd: list[str], timeout: float = 180):
    """Start one launcher per task with the variables srun gives a 1-node, N-task step."""
    procs = []
    for i in range(ntasks):
        env = {**os.environ, **slurm_env(i, i, 0, "cn1", str(ntasks), ntasks),
               "HVDLM_RENDEZVOUS_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "hvdlm.launch", "--timeout", "120",
                                       "--", *cmd], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT))
    return [(p.wait(timeout=timeout), p.stdout.read()) for p in procs]


@pytest.mark.horovod
def test_srun_style_tasks_become_horovod_ranks(tmp_path):
    pytest.importorskip("horovod.torch")
    results = srun_like(2, tmp_path, [sys.executable, str(CHECK), "--hosts", "cn1:2",
                                      "--elements", "1024"])
    for rank, (code, out) in enumerate(results):
        assert code == 0 and f"rank {rank} ok on cn1" in out, out


@pytest.mark.horovod
def test_hosts_mode_without_namespaces():
    pytest.importorskip("horovod.torch")
    proc = run_module("hvdlm.launch", "--hosts", "ha:1,hb:1", "--timeout", "120", "--",
                      sys.executable, str(CHECK), "--hosts", "ha:1,hb:1", "--elements", "1024",
                      timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 0 ok on ha" in proc.stdout and "rank 1 ok on hb" in proc.stdout


@pytest.mark.horovod  # needs Horovod's rendezvous server, though the ranks do not init
def test_hosts_mode_names_the_failed_rank_and_stops_the_others():
    cmd = [sys.executable, "-c", "import os, sys, time; r = int(os.environ['HOROVOD_RANK']);"
           " time.sleep(0.5); sys.exit(3) if r == 1 else time.sleep(60)"]
    pytest.importorskip("horovod.runner.http.http_server")
    t = time.monotonic()
    proc = run_module("hvdlm.launch", "--hosts", "ha:2,hb:1", "--", *cmd, timeout=60)
    assert proc.returncode == 3
    assert "rank 1 (ha) exited with code 3; stopped 2 other rank(s)" in proc.stderr
    assert time.monotonic() - t < 20


@pytest.mark.horovod
def test_hosts_mode_job_timeout():
    pytest.importorskip("horovod.runner.http.http_server")
    proc = run_module("hvdlm.launch", "--hosts", "ha:1", "--job-timeout", "1", "--",
                      sys.executable, "-c", "import time; time.sleep(60)", timeout=60)
    assert proc.returncode == 124 and "timed out after 1 s" in proc.stderr
