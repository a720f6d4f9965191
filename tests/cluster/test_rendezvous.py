"""Tests of hvdlm.cluster.rendezvous: deadlines, stale files, the server's one address.

    .venv/bin/python -m pytest tests/cluster/test_rendezvous.py
"""
from __future__ import annotations

import time

import pytest

from hvdlm.cluster.rendezvous import iface_towards, publish, wait_for
from hvdlm.errors import HvdlmError


def test_rendezvous_wait_has_a_deadline(tmp_path):
    t = time.monotonic()
    with pytest.raises(HvdlmError, match="rendezvous timed out after 0.5 s"):
        wait_for(tmp_path / "never", 0.5)
    # A stale file (a port nothing listens on, e.g. left by a killed run) is waited past too.
    publish(tmp_path / "stale", "127.0.0.1", 1)
    with pytest.raises(HvdlmError, match="does not answer"):
        wait_for(tmp_path / "stale", 0.5)
    assert time.monotonic() - t < 5


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
