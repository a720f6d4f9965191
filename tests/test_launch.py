"""Tests of hvdlm.launch, hvdlm.hostlist and hvdlm.rendezvous: parsing, the rank plan, the
Slurm/submitit mapping, rendezvous deadlines, signals; then real Horovod ranks started the way
srun starts them (one launcher per task) and with --hosts.

    .venv/bin/python -m pytest tests/test_launch.py
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hvdlm.errors import HvdlmError, UsageError
from hvdlm.cluster.hostlist import (Slot, assign_slots, expand_nodelist, expand_tasks_per_node, find_slot,
                            horovod_env, parse_hosts, task_from_environ)
from hvdlm.cluster.rendezvous import iface_towards, publish, wait_for
from tests.conftest import ROOT, run_module

CHECK = ROOT / "tests" / "multihost" / "allreduce_check.py"


@pytest.mark.parametrize("nodelist, expected", [
    ("node01", ["node01"]),
    ("node[01-04,07]", ["node01", "node02", "node03", "node04", "node07"]),
    ("a[1-2],b3", ["a1", "a2", "b3"]),
    ("gpu-[001-003]-x", ["gpu-001-x", "gpu-002-x", "gpu-003-x"]),
    ("n[8-10]", ["n8", "n9", "n10"]),
    ("n[08-10]", ["n08", "n09", "n10"]),
    ("r[1-2]-n[1-2]", ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]),
    ("x,y[5],z.example.org", ["x", "y5", "z.example.org"]),
])
def test_expand_nodelist(nodelist, expected):
    assert expand_nodelist(nodelist) == expected


@pytest.mark.parametrize("bad", ["node[01-", "node]1[", "n[3-1]", "n[a-b]", "a,,b", "n[1-2]$"])
def test_expand_nodelist_refuses_malformed(bad):
    with pytest.raises(UsageError):
        expand_nodelist(bad)


@pytest.mark.parametrize("spec, expected", [
    ("1", [1]), ("4", [4]), ("2(x3),1", [2, 2, 2, 1]), ("1,3(x2)", [1, 3, 3]),
])
def test_expand_tasks_per_node(spec, expected):
    assert expand_tasks_per_node(spec) == expected


def test_parse_hosts_and_refusals():
    assert parse_hosts("node01:2,node02:1,node03") == [("node01", 2), ("node02", 1), ("node03", 1)]
    for bad in ("a:1,a:2", "a:0", "a:x", "", "a b:1"):
        with pytest.raises(UsageError):
            parse_hosts(bad)


def test_plan_uneven_hosts():
    slots = assign_slots([("a", 2), ("b", 2), ("c", 2), ("d", 1)])
    assert [s.rank for s in slots] == list(range(7))
    assert [(s.hostname, s.local_rank, s.local_size) for s in slots[5:]] == [("c", 1, 2), ("d", 0, 1)]
    # Local rank 0 exists on all 4 hosts, local rank 1 only on the first 3.
    assert [(s.cross_rank, s.cross_size) for s in slots if s.local_rank == 0] == [(i, 4) for i in range(4)]
    assert [(s.cross_rank, s.cross_size) for s in slots if s.local_rank == 1] == [(i, 3) for i in range(3)]


@pytest.mark.horovod
@pytest.mark.parametrize("hosts", [[("a", 1)], [("a", 2), ("b", 1), ("c", 3)],
                                   [(f"n{i}", 1 + i % 3) for i in range(6)]])
def test_plan_matches_horovods_own(hosts):
    util = pytest.importorskip("horovod.runner.common.util.hosts")
    theirs = util.get_host_assignments(util.parse_hosts(",".join(f"{h}:{n}" for h, n in hosts)),
                                       sum(n for _, n in hosts))
    assert [Slot(**vars(s)) for s in theirs] == assign_slots(hosts)


def slurm_env(procid, localid, nodeid, nodelist, tasks_per_node, ntasks, **extra):
    return {"SLURM_PROCID": str(procid), "SLURM_LOCALID": str(localid),
            "SLURM_NODEID": str(nodeid), "SLURM_JOB_NODELIST": nodelist,
            "SLURM_TASKS_PER_NODE": tasks_per_node, "SLURM_NTASKS": str(ntasks),
            "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", **extra}


def place(env):
    task = task_from_environ(env)
    slot = find_slot(assign_slots(task.hosts), task.host, task.local_rank)
    return task, slot


def test_slurm_one_node():
    task, slot = place(slurm_env(1, 1, 0, "cn7", "2", 2))
    assert (task.rank, task.host, task.hosts, task.job_key) == (1, "cn7", [("cn7", 2)], "4242.0.0")
    env = horovod_env(slot, "127.0.0.1", 5000, "lo", 30)
    assert {k: env[k] for k in ("HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK",
                                "HOROVOD_LOCAL_SIZE", "HOROVOD_CROSS_RANK", "HOROVOD_CROSS_SIZE",
                                "HOROVOD_HOSTNAME", "HOROVOD_CONTROLLER",
                                "HOROVOD_CPU_OPERATIONS")} == {
        "HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1",
        "HOROVOD_LOCAL_SIZE": "2", "HOROVOD_CROSS_RANK": "0", "HOROVOD_CROSS_SIZE": "1",
        "HOROVOD_HOSTNAME": "cn7", "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo"}


def test_slurm_several_nodes_uneven():
    # 7 tasks on node[01-03,07]: 2,2,2,1 (SLURM_TASKS_PER_NODE=2(x3),1), block distribution.
    layout = [(0, "node01", 0), (1, "node01", 1), (2, "node02", 0), (3, "node02", 1),
              (4, "node03", 0), (5, "node03", 1), (6, "node07", 0)]
    nodes = ["node01", "node02", "node03", "node07"]
    for procid, node, localid in layout:
        env = slurm_env(procid, localid, nodes.index(node), "node[01-03,07]", "2(x3),1", 7)
        task, slot = place(env)
        assert (task.host, slot.rank, slot.local_rank, slot.size) == (node, procid, localid, 7)
        assert slot.local_size == (1 if node == "node07" else 2)
        assert (slot.cross_rank, slot.cross_size) == ((nodes.index(node), 4) if localid == 0
                                                      else (nodes.index(node), 3))
        assert horovod_env(slot, "10.0.0.1", 1, "eth0", 30)["HOROVOD_HOSTNAME"] == node


def test_slurm_step_variables_win_and_restart_count_keys_the_file():
    env = slurm_env(0, 0, 5, "node[01-08]", "1(x8)", 8, SLURM_STEP_NODELIST="node[03-04]",
                    SLURM_STEP_TASKS_PER_NODE="1(x2)", SLURM_STEP_NUM_TASKS="2",
                    SLURMD_NODENAME="node03", SLURM_RESTART_COUNT="2", SLURM_STEP_ID="3")
    task = task_from_environ(env)
    assert (task.host, task.hosts, task.job_key) == ("node03", [("node03", 1), ("node04", 1)],
                                                     "4242.3.2")


def test_slurm_inconsistent_counts_is_one_clear_error():
    with pytest.raises(UsageError, match="add up to 6, not 5"):
        task_from_environ(slurm_env(0, 0, 0, "n[1-3]", "2(x3)", 5))
    with pytest.raises(UsageError, match="3 nodes but 2 task counts"):
        task_from_environ(slurm_env(0, 0, 0, "n[1-3]", "2,1", 3))


def test_submitit_local_environment():
    env = {"SUBMITIT_LOCAL_GLOBALID": "2", "SUBMITIT_LOCAL_LOCALID": "2",
           "SUBMITIT_LOCAL_NTASKS": "3", "SUBMITIT_LOCAL_NODEID": "0",
           "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_JOB_ID": "999"}
    task, slot = place(env)
    assert (slot.rank, slot.size, slot.local_rank, slot.local_size) == (2, 3, 2, 3)
    assert task.job_key == "local-999"


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


def test_rendezvous_wait_has_a_deadline(tmp_path):
    t = time.monotonic()
    with pytest.raises(HvdlmError, match="rendezvous timed out after 0.5 s"):
        wait_for(tmp_path / "never", 0.5)
    # A stale file (a port nothing listens on, e.g. left by a killed run) is waited past too.
    publish(tmp_path / "stale", "127.0.0.1", 1)
    with pytest.raises(HvdlmError, match="does not answer"):
        wait_for(tmp_path / "stale", 0.5)
    assert time.monotonic() - t < 5


def test_rank_waiting_for_rendezvous_times_out_in_one_line(tmp_path):
    env = {**os.environ, **slurm_env(1, 1, 0, "cn1", "2", 2), "HVDLM_RENDEZVOUS_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "hvdlm.launch", "--timeout", "1", "--", "true"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "rendezvous timed out after 1 s" in proc.stderr


@pytest.mark.horovod
def test_rendezvous_listens_on_one_address_for_the_job_only():
    pytest.importorskip("horovod.runner.http.http_server")
    import socket
    from hvdlm.cluster.rendezvous import JobRendezvous
    server = JobRendezvous("127.0.0.1", [("a", 1), ("b", 2)])
    assert server._httpd.server_address[0] == "127.0.0.1"  # not Horovod's '' (every interface)
    socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    server.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)


def test_loopback_interface():
    assert iface_towards("127.0.0.1") == "lo"


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


def srun_like(ntasks: int, tmp_path: Path, cmd: list[str], timeout: float = 60):
    """Start one launcher per task with the variables srun gives a 1-node, N-task step."""
    procs = []
    for i in range(ntasks):
        env = {**os.environ, **slurm_env(i, i, 0, "cn1", str(ntasks), ntasks),
               "HVDLM_RENDEZVOUS_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "hvdlm.launch", "--timeout", "30",
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
    proc = run_module("hvdlm.launch", "--hosts", "ha:1,hb:1", "--timeout", "30", "--",
                      sys.executable, str(CHECK), "--hosts", "ha:1,hb:1", "--elements", "1024",
                      timeout=120)
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
