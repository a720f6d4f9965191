"""A second Unix user attacks a running job's rendezvous, and plants rendezvous files.

The job is real: two Horovod ranks started by `hvdlm.launch` (with --hosts, and the srun way:
one launcher per task, the address and secret passed through the rendezvous file). Each rank
prints the rendezvous port and waits for a go file before hvd.init(), so the attacks happen
while the server is up and the ranks have not rendezvoused yet; the flood runs while they do.
Attack traffic goes to 127.0.0.1 only; every loop is bounded in count and in time.

    sudo .venv/bin/python -m pytest tests/security/test_rendezvous_attacks.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cluster.conftest import slurm_env
from tests.conftest import ROOT

pytestmark = [pytest.mark.security, pytest.mark.horovod]

RANK = """
import os, sys, time
# One write(2) per line: both ranks share the launcher's stdout, and print() may split a
# line into two writes that the other rank's line then lands between.
os.write(1, f"PORT {os.environ['HOROVOD_GLOO_RENDEZVOUS_PORT']}\\n".encode())
go, deadline = sys.argv[1], time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.05)
import horovod.torch as hvd, torch
hvd.init()
t = hvd.allreduce(torch.arange(4.0) * (hvd.rank() + 1), op=hvd.Sum, name="x")
os.write(1, f"RESULT {hvd.rank()} {hvd.size()} {t.tolist()}\\n".encode())
"""

ATTACK = r"""
import http.client, json, socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
def status(method, path, body=None, headers={}):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request(method, path, body=body, headers=headers)
        return c.getresponse().status
    finally:
        c.close()
if mode == "probe":
    fake = {"Authorization": "Bearer " + "0" * 64}
    print(json.dumps([status("GET", "/global/0"), status("GET", "/global/rank_0"),
                      status("PUT", "/global/0", b"\0" * 136),
                      status("PUT", "/global/1", b"\0" * 136, fake),
                      status("DELETE", "/global/0"), status("DELETE", "/global/1", None, fake),
                      status("HEAD", "/")]))
else:  # flood: oversized PUTs (1 GiB announced, 8 KiB sent), bounded in count and time
    n, deadline, codes = int(sys.argv[3]), time.monotonic() + float(sys.argv[4]), {}
    for i in range(n):
        if time.monotonic() > deadline:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"PUT /global/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                          % (i % 2, 1 << 30) + b"x" * 8192)
                reply = s.recv(64).split()
                code = reply[1].decode() if len(reply) > 1 else "closed"
        except OSError as err:
            code = type(err).__name__
        codes[code] = codes.get(code, 0) + 1
    print(json.dumps(codes))
"""

EXPECTED = [0.0, 3.0, 6.0, 9.0]  # arange(4) * (1 + 2)


def _ports(proc: subprocess.Popen, n: int, timeout: float = 60) -> set[int]:
    """The rendezvous port the first n PORT lines of proc's stdout name."""
    ports, deadline = [], time.monotonic() + timeout
    while len(ports) < n and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("PORT "):
            ports.append(int(line.split()[1]))
    assert len(ports) == n, f"ranks did not start: {ports}"
    return set(ports)


def _attack_then_go(attacker, port: int, go: Path) -> tuple[list[int], dict]:
    """Probe (GET/PUT/DELETE) before the ranks rendezvous, then flood while they do."""
    probe = attacker.run([sys.executable, "-c", ATTACK, port, "probe"], timeout=60)
    assert probe.returncode == 0, probe.stderr
    flood: dict = {}

    def run_flood():
        out = attacker.run([sys.executable, "-c", ATTACK, port, "flood", 600, 30], timeout=60)
        flood.update(json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr})

    t = threading.Thread(target=run_flood)
    t.start()
    time.sleep(0.5)  # the flood is under way when the ranks start to rendezvous
    go.touch()
    t.join(timeout=90)
    return json.loads(probe.stdout), flood


def _check_outcome(probe, flood, outputs: str, server_log: str) -> None:
    assert probe == [403] * 7, probe
    assert set(flood) <= {"403", "ConnectionResetError", "BrokenPipeError"}, flood
    assert flood.get("403", 0) >= 100, flood
    for rank in (0, 1):
        assert f"RESULT {rank} 2 {EXPECTED}" in outputs, outputs
    refusals = [ln for ln in server_log.splitlines() if "hvdlm.rendezvous: refused" in ln]
    assert refusals and all("from 127.0.0.1:" in ln for ln in refusals)
    assert len(refusals) <= 100  # a flood cannot fill the job's log
    assert "refused GET '/global/0' from 127.0.0.1:" in server_log


def test_hosts_job_refuses_the_attacker_and_finishes(attacker, open_dir, tmp_path):
    pytest.importorskip("horovod.torch")
    go, log = tmp_path / "go", tmp_path / "launcher.err"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hvdlm.launch", "--hosts", "localhost:2", "--timeout", "60",
             "--job-timeout", "180", "--", sys.executable, "-c", RANK, str(go)],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            (port,) = _ports(proc, 2)
            probe, flood = _attack_then_go(attacker, port, go)
            out, _ = proc.communicate(timeout=180)
        finally:
            proc.kill()
    assert proc.returncode == 0, out + log.read_text()
    _check_outcome(probe, flood, out, log.read_text())


def test_srun_style_job_refuses_the_attacker_and_finishes(attacker, open_dir, tmp_path):
    """Slurm-step mode: the address and the secret travel in a 0600 file in a 0700 folder."""
    pytest.importorskip("horovod.torch")
    folder, go = open_dir / "rendezvous", tmp_path / "go"
    procs, logs = [], []
    try:
        for i in range(2):
            logs.append((tmp_path / f"task{i}.err").open("w"))
            env = {**os.environ, **slurm_env(i, i, 0, "cn1", "2", 2), "PYTHONUNBUFFERED": "1",
                   "HVDLM_RENDEZVOUS_DIR": str(folder), "SLURM_CLUSTER_NAME": "sec"}
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "hvdlm.launch", "--timeout", "60", "--", sys.executable,
                 "-c", RANK, str(go)], stdout=subprocess.PIPE, stderr=logs[-1], text=True,
                env=env, cwd=ROOT))
        ports = _ports(procs[0], 1) | _ports(procs[1], 1)
        assert len(ports) == 1
        (port,) = ports
        published = folder / "sec.4242.0.0"
        assert published.exists() and (published.stat().st_mode & 0o777) == 0o600
        assert (folder.stat().st_mode & 0o777) == 0o700
        peek = attacker.run([sys.executable, "-c", "import sys; print(open(sys.argv[1]).read())",
                             published])
        assert peek.returncode != 0 and "PermissionError" in peek.stderr
        probe, flood = _attack_then_go(attacker, port, go)
        outs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
        for f in logs:
            f.close()
    assert [p.returncode for p in procs] == [0, 0], outs
    _check_outcome(probe, flood, "".join(outs), (tmp_path / "task0.err").read_text())
    assert not published.exists()  # rank 0 removed it


def _launch_task(rank: int, folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **slurm_env(rank, rank, 0, "cn1", "2", 2), "PYTHONUNBUFFERED": "1",
           "HVDLM_RENDEZVOUS_DIR": str(folder)}
    return subprocess.run([sys.executable, "-m", "hvdlm.launch", "--timeout", "5", "--", "true"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


PLANT = r"""
import os, sys
folder, mode = sys.argv[1], int(sys.argv[2], 8)
os.makedirs(folder, exist_ok=True)
if os.stat(folder).st_uid == os.getuid():
    os.chmod(folder, mode)
with open(os.path.join(folder, "local.4242.0.0"), "w") as f:
    f.write("127.0.0.1 1 " + "0" * 64 + "\n")
"""


def _plant_then_every_rank_refuses(attacker, folder, mode: str, message: str) -> None:
    plant = attacker.run([sys.executable, "-c", PLANT, folder, mode])
    assert plant.returncode == 0, plant.stderr
    for rank in (0, 1):
        proc = _launch_task(rank, folder)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert message in proc.stderr


@pytest.mark.parametrize("mode", ["0777", "0755"])
def test_rendezvous_folder_planted_by_the_attacker_is_refused(attacker, open_dir, mode):
    shared = open_dir / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # a shared scratch folder, like /tmp
    folder = shared / "rendezvous"
    _plant_then_every_rank_refuses(attacker, folder, mode,
                                   f"refusing the rendezvous folder {folder}: owned by uid "
                                   f"{attacker.uid}")


def test_file_planted_in_a_group_writable_folder_is_refused(attacker, open_dir):
    """Our own folder, but writable by a group the attacker is in (here: by everyone)."""
    folder = open_dir / "rendezvous"
    folder.mkdir()
    folder.chmod(0o777)
    _plant_then_every_rank_refuses(attacker, folder, "777", f"refusing the rendezvous folder "
                                   f"{folder}: writable by group or others")
    # Even in a folder of ours (as if made private after the attacker planted it), the file
    # that is not ours is refused at once, not trusted nor waited past.
    folder.chmod(0o700)
    proc = _launch_task(1, folder)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"refusing the rendezvous file {folder / 'local.4242.0.0'}: owned by uid " \
           f"{attacker.uid}" in proc.stderr


def test_symlink_planted_as_the_rendezvous_folder_is_refused(attacker, open_dir):
    shared = open_dir / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    target = shared / "attacker-owned"
    plant = attacker.run([sys.executable, "-c", PLANT, target, "755"])
    assert plant.returncode == 0, plant.stderr
    link = shared / "rendezvous"
    made = attacker.run(["ln", "-s", target, link])
    assert made.returncode == 0, made.stderr
    proc = _launch_task(0, link)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"owned by uid {attacker.uid}" in proc.stderr
    assert not any(p.name.startswith(".") for p in target.iterdir())  # nothing written there
