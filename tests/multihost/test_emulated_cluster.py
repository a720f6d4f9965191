"""Horovod across emulated hosts: network namespaces on a bridge with shaped links (root only).

tests/infra/emulate-cluster.sh brings up node01..node04; hvdlm.launch starts ranks in them, both
with --hosts --netns and the srun way (one launcher per task, Slurm variables, rendezvous file);
each rank checks its place and collective values (tests/multihost/allreduce_check.py).

    sudo .venv/bin/python -m pytest tests/multihost -m netns
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hvdlm.cluster.launch import run_on_hosts
from tests.conftest import ROOT, run_module

SCRIPT = ROOT / "tests" / "infra" / "emulate-cluster.sh"
CHECK = ROOT / "tests" / "multihost" / "allreduce_check.py"
HOSTS4 = [f"node0{i}" for i in range(1, 5)]

pytestmark = pytest.mark.netns


def emu(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"emulate-cluster.sh {args} exited {proc.returncode}: {proc.stderr}")
    return proc


def root_view() -> dict[str, str]:
    """What the script could leave behind: namespaces, links and qdiscs in the root namespace,
    and the per-namespace name files."""
    def out(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    return {"netns": out("ip", "netns", "list"), "links": out("ip", "-o", "link", "show"),
            "qdiscs": out("tc", "qdisc", "show"),
            "etc": " ".join(sorted(os.listdir("/etc/netns"))) if os.path.isdir("/etc/netns") else ""}


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("emulated hosts need root (network namespaces)")
    if not shutil.which("ip") or not shutil.which("tc"):
        pytest.skip("iproute2 (ip, tc) is not installed")
    emu("down")  # a cluster left by an interrupted earlier run
    before = root_view()
    emu("up", "4", "--rate", "1gbit")
    yield before
    emu("down")


def check_cmd(hosts: str, *extra: str) -> list[str]:
    return [sys.executable, str(CHECK), "--hosts", hosts, "--in-netns", *extra]


def test_up_is_idempotent_and_hosts_see_each_other(cluster):
    again = emu("up", "4", "--rate", "1gbit")
    assert "4 hosts up" in again.stdout
    status = emu("status").stdout
    for i, host in enumerate(HOSTS4, 1):
        assert f"{host} 10.77.0.{i}/24 qdisc tbf" in status and "rate 1Gbit" in status
    names = emu("exec", "node03", "getent", "hosts", "node01", "node04").stdout.split()
    assert names == ["10.77.0.1", "node01", "10.77.0.4", "node04"]
    reach = emu("exec", "node04", sys.executable, "-c",
                "import socket; socket.create_connection(('node01', 9), timeout=3)", check=False)
    assert "Connection refused" in reach.stderr  # a host answered: routed, nothing listening


def test_not_root_is_one_clear_line(cluster):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) not installed")
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "bash", str(SCRIPT), "up", "2"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "root" in proc.stderr


@pytest.mark.horovod
def test_two_hosts_uneven_slots(cluster):
    proc = run_module("hvdlm.launch", "--hosts", "node01:2,node02:1", "--netns", "--timeout",
                      "30", "--job-timeout", "90", "--", *check_cmd("node01:2,node02:1"),
                      timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 1 ok on node01 (local 1/2, cross 0/1)" in proc.stdout
    assert "rank 2 ok on node02 (local 0/1, cross 1/2)" in proc.stdout


@pytest.mark.horovod
def test_four_hosts_from_python(cluster, capfd):
    hosts = [(h, 1) for h in HOSTS4]
    code = run_on_hosts(hosts, check_cmd(",".join(f"{h}:1" for h in HOSTS4)), netns=True,
                        env={"PYTHONUNBUFFERED": "1"}, timeout=90, startup_timeout=30)
    out = capfd.readouterr().out
    assert code == 0, out
    for r, host in enumerate(HOSTS4):
        assert f"rank {r} ok on {host} (local 0/1, cross {r}/4)" in out


@pytest.mark.horovod
def test_srun_style_tasks_across_hosts(cluster, tmp_path):
    """One launcher per task, as srun starts them on node[01-03] with 2,1(x2) tasks: rank 0
    serves the rendezvous on node01's address, the others find it through the shared file."""
    layout = [("node01", 0), ("node01", 1), ("node02", 0), ("node03", 0)]
    procs = []
    for procid, (node, localid) in enumerate(layout):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HVDLM_RENDEZVOUS_DIR": str(tmp_path),
               "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(localid),
               "SLURM_NODEID": str(int(node[-1]) - 1), "SLURMD_NODENAME": node,
               "SLURM_JOB_NODELIST": "node[01-03]", "SLURM_TASKS_PER_NODE": "2,1(x2)",
               "SLURM_NTASKS": "4", "SLURM_JOB_ID": "31", "SLURM_STEP_ID": "0"}
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", node, sys.executable, "-m", "hvdlm.launch", "--timeout", "30",
             "--", *check_cmd("node01:2,node02:1,node03:1", "--elements", "4096")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT))
    outs = [(p.wait(timeout=120), p.stdout.read()) for p in procs]
    for rank, (code, out) in enumerate(outs):
        assert code == 0 and f"rank {rank} ok on {layout[rank][0]}" in out, out


@pytest.mark.horovod
def test_process_sets_with_hostname_on_loopback(cluster):
    """The case Horovod 0.28.1's quirk breaks: inside every host the machine's hostname
    resolves to 127.0.0.1. Process-set Gloo contexts (the global one included) must use
    HOROVOD_GLOO_IFACE, as hvdlm's build patch makes them; the control run without an
    interface shows these hosts really do send a hostname-bound context to 127.0.0.1."""
    emu("up", "4", "--rate", "1gbit", "--loopback-hostname")
    try:
        resolved = emu("exec", "node02", sys.executable, "-c",
                       "import socket; print(socket.gethostbyname(socket.gethostname()))")
        assert resolved.stdout.strip() == "127.0.0.1"
        hosts = "node01:1,node02:1,node03:1"
        ok = run_module("hvdlm.launch", "--hosts", hosts, "--netns", "--timeout", "30",
                        "--job-timeout", "90", "--", *check_cmd(hosts, "--process-sets"),
                        timeout=120)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        control = run_module("hvdlm.launch", "--hosts", "node01:1,node02:1", "--netns",
                             "--timeout", "10", "--job-timeout", "60", "--",
                             *check_cmd("node01:1,node02:1", "--no-iface"), timeout=120)
        assert control.returncode != 0 and "127.0.0.1" in control.stderr, control.stderr
    finally:
        emu("up", "4", "--rate", "1gbit")


def test_failed_rank_is_named_and_the_rest_stopped(cluster):
    pytest.importorskip("horovod.runner.http.http_server")
    cmd = [sys.executable, "-c", "import os, sys, time; r = int(os.environ['HOROVOD_RANK']);"
           " time.sleep(0.5); sys.exit(5) if r == 2 else time.sleep(60)"]
    proc = run_module("hvdlm.launch", "--hosts", "node01:1,node02:1,node03:1", "--netns", "--",
                      *cmd, timeout=60)
    assert proc.returncode == 5
    assert "rank 2 (node03) exited with code 5; stopped 2 other rank(s)" in proc.stderr


def test_down_removes_everything_up_made(cluster):
    emu("down")
    after = root_view()
    assert after == cluster, f"left behind: {after} vs before {cluster}"
    assert not Path("/run/hvdlm-emulate-cluster").exists()
    assert "nothing to remove" in emu("down").stdout  # idempotent
