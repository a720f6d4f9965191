"""Tests of hvdlm.cluster.rendezvous: deadlines, stale files, the server's one address, the
secret every request must carry, bounded bodies, and the checks on the rendezvous folder and
file. (Attacks by a real second user: tests/security/test_rendezvous_attacks.py.)

    .venv/bin/python -m pytest tests/cluster/test_rendezvous.py
"""
from __future__ import annotations

import http.client
import os
import socket
import time

import pytest

from hvdlm.cluster.rendezvous import (iface_towards, new_secret, publish, read_published,
                                      secure_dir, wait_for)
from hvdlm.errors import HvdlmError


def test_rendezvous_wait_has_a_deadline(tmp_path):
    t = time.monotonic()
    with pytest.raises(HvdlmError, match="rendezvous timed out after 0.5 s"):
        wait_for(tmp_path / "never", 0.5)
    # A stale file (a port nothing listens on, e.g. left by a killed run) is waited past too.
    publish(tmp_path / "stale", "127.0.0.1", 1, new_secret())
    with pytest.raises(HvdlmError, match="does not answer"):
        wait_for(tmp_path / "stale", 0.5)
    assert time.monotonic() - t < 15  # two 0.5 s deadlines, ~1.2 s in all: a hang guard


@pytest.fixture
def server():
    pytest.importorskip("horovod.runner.http.http_server")
    from hvdlm.cluster.rendezvous import JobRendezvous
    secret = new_secret()
    srv = JobRendezvous("127.0.0.1", [("a", 1), ("b", 2)], secret)
    yield srv, secret
    srv.close()


def request(port, method, path, body=b"", secret=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    hdrs = dict(headers or {})
    if secret is not None:
        hdrs["Authorization"] = f"Bearer {secret}"
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


@pytest.mark.horovod
def test_rendezvous_listens_on_one_address_for_the_job_only(server):
    srv, _ = server
    socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    # Linux delivers all of 127/8 to the loopback device: a server on every interface (as
    # Horovod's own, on '') answers at 127.0.0.2 too; one on 127.0.0.1 alone refuses there.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", srv.port), timeout=2)
    srv.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2)


@pytest.mark.horovod
def test_only_requests_with_the_secret_reach_the_store(server, capfd):
    srv, secret = server
    port = srv.port
    assert request(port, "PUT", "/global/0", b"addr-of-rank-0", secret) == (200, b"")
    wrong = new_secret()
    for who in (None, wrong, secret[:-1], secret + "0"):
        assert request(port, "GET", "/global/0", secret=who)[0] == 403
        assert request(port, "PUT", "/global/0", b"attacker", secret=who)[0] == 403
        assert request(port, "DELETE", "/global/0", secret=who)[0] == 403
    assert request(port, "GET", "/global/0", headers={"Authorization": secret})[0] == 403
    assert request(port, "HEAD", "/", secret=None)[0] == 403  # not a listing of our cwd
    # Refused requests changed nothing: the value and the scope's progress are intact.
    assert request(port, "GET", "/global/0", secret=secret) == (200, b"addr-of-rank-0")
    assert srv._httpd.finished_list == {}
    err = capfd.readouterr().err
    refusals = [line for line in err.splitlines() if "refused" in line]
    assert len(refusals) == srv.refusals == 14
    assert all("from 127.0.0.1:" in line for line in refusals)
    assert secret not in err and wrong not in err


@pytest.mark.horovod
def test_oversized_body_is_refused_unread(server, capfd):
    srv, secret = server
    # Claims 1 GiB but sends a few bytes: answered at once (413), not read nor waited for.
    conn = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    conn.sendall(f"PUT /global/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n"
                 f"Content-Length: {1 << 30}\r\n\r\nabc".encode())
    t = time.monotonic()
    assert conn.recv(200).startswith(b"HTTP/1.0 413")
    assert time.monotonic() - t < 2
    conn.close()
    big = b"x" * (64 * 1024 + 1)
    assert request(srv.port, "PUT", "/global/0", big, secret)[0] == 413
    assert request(srv.port, "PUT", "/global/0", big[:-1], secret)[0] == 200
    assert request(srv.port, "PUT", "/global/0", b"x", headers={"Content-Length": "-1"},
                   secret=secret)[0] in (400, 413)
    assert "413" not in capfd.readouterr().out


def test_folder_is_created_private_and_checked(tmp_path):
    d = secure_dir(tmp_path / "a" / "rendezvous")
    assert (d.stat().st_mode & 0o777) == 0o700
    d.chmod(0o770)
    with pytest.raises(HvdlmError, match=r"refusing the rendezvous folder .*rendezvous: "
                                         r"writable by group or others \(mode 0770\)"):
        secure_dir(d)
    d.chmod(0o755)  # readable is fine: the file in it is 0600
    secure_dir(d)
    if os.geteuid() == 0:
        os.chown(d, 1, 1)
        with pytest.raises(HvdlmError, match="owned by uid 1, not by you"):
            secure_dir(d)


def test_published_file_is_private_and_checked(tmp_path):
    secret = new_secret()
    path = tmp_path / "local.1.0.0"
    publish(path, "127.0.0.1", 1234, secret)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert read_published(path) == ("127.0.0.1", 1234, secret)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    path.chmod(0o644)
    with pytest.raises(HvdlmError, match=r"readable or writable by group or others \(mode 0644"):
        read_published(path)
    path.unlink()
    # A symlink or a FIFO in its place is refused, not followed or blocked on.
    target = tmp_path / "elsewhere"
    target.write_text("127.0.0.1 1 x\n")
    target.chmod(0o600)
    path.symlink_to(target)
    with pytest.raises(HvdlmError, match="a symbolic link"):
        read_published(path)
    with pytest.raises(HvdlmError, match="a symbolic link"):  # wait_for refuses at once too
        wait_for(path, 10)
    path.unlink()
    os.mkfifo(path, 0o600)
    with pytest.raises(HvdlmError, match="not a regular file"):
        read_published(path)
    path.unlink()
    # publish replaces a symlink at its name; it never writes through it.
    path.symlink_to(target)
    publish(path, "127.0.0.1", 99, secret)
    assert not path.is_symlink() and target.read_text() == "127.0.0.1 1 x\n"


def test_launch_names_the_file_after_cluster_and_job(tmp_path):
    from hvdlm.cluster.hostlist import task_from_environ
    from hvdlm.cluster.launch import rendezvous_file
    from tests.cluster.conftest import slurm_env
    env = {**slurm_env(0, 0, 0, "cn1", "1", 1), "HVDLM_RENDEZVOUS_DIR": str(tmp_path)}
    task = task_from_environ(env)
    assert rendezvous_file(task, env) == tmp_path / "local.4242.0.0"
    env["SLURM_CLUSTER_NAME"] = "big/one"
    assert rendezvous_file(task, env) == tmp_path / "big_one.4242.0.0"


def test_loopback_interface():
    assert iface_towards("127.0.0.1") == "lo"
