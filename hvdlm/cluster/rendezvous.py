"""Horovod's Gloo rendezvous server, bound to one address, and how other tasks find it.

Horovod's `RendezvousServer.start()` listens on every interface (`('', port)`) and its `stop()`
leaves the socket open. A job needs neither: `JobRendezvous` binds only the address the job's
ranks use and closes the socket when the job ends. Rank 0 publishes `addr port` in a file
(written atomically) that the other tasks wait for, with a deadline, then probe.

`--hosts --netns` runs the server inside the first emulated host's namespace with this module's
command line; it prints `ADDR PORT` and serves until its stdin closes (its parent ended):

    ip netns exec node01 python -m hvdlm.rendezvous --bind-host node01 --hosts node01:1,node02:1
"""
from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Sequence

from horovod.runner.common.util.hosts import get_host_assignments
from horovod.runner.common.util.hosts import parse_hosts as hvd_parse_hosts
from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer
from horovod.runner.util.threads import in_thread

from hvdlm import cli
from hvdlm.cluster.hostlist import hosts_string, parse_hosts
from hvdlm.errors import HvdlmError


class JobRendezvous:
    """Horovod's RendezvousServer on (addr, OS-chosen port), initialised with the job's plan."""

    def __init__(self, addr: str, hosts: Sequence[tuple[str, int]], verbose: int = 0):
        size = sum(n for _, n in hosts)
        try:
            # Port 0: the kernel picks a free port atomically (Horovod tries random ones).
            self._httpd = RendezvousHTTPServer((addr, 0), RendezvousHandler, verbose)
        except OSError as err:
            raise HvdlmError(f"cannot start the rendezvous server on {addr}: {err}") from None
        self.addr, self.port = addr, self._httpd.server_address[1]
        self._httpd.init(get_host_assignments(hvd_parse_hosts(hosts_string(hosts)), size))
        self._thread = in_thread(target=self._httpd.serve_forever)

    def close(self) -> None:
        """Stop serving and release the port: the server lives only as long as the job."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def publish(path: Path, addr: str, port: int) -> None:
    """Write `addr port` to `path` atomically, so a reader never sees half a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{addr} {port}\n")
    os.replace(tmp, path)


def wait_for(path: Path, timeout_s: float) -> tuple[str, int]:
    """Wait until `path` names a server that accepts connections; HvdlmError at the deadline.

    The probe matters after a requeue or a crash: a file left by an earlier run names a port
    that no longer answers, and we keep waiting for rank 0 to replace it.
    """
    deadline = time.monotonic() + timeout_s
    last = "no rendezvous file yet"
    while True:
        try:
            addr, port_text = path.read_text().split()
            port = int(port_text)
            with socket.create_connection((addr, port), timeout=2):
                return addr, port
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as err:
            last = f"{path} names a server that does not answer ({err})"
        if time.monotonic() >= deadline:
            raise HvdlmError(f"rendezvous timed out after {timeout_s:g} s waiting for rank 0 "
                             f"({last}; file {path})")
        time.sleep(0.2)


def ipv4_of(iface: str) -> str | None:
    """The IPv4 address of `iface` (SIOCGIFADDR), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", iface.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def iface_of_address(addr: str) -> str:
    """The local interface that holds `addr` (this network namespace)."""
    try:
        import psutil  # a Horovod dependency; it sees every address of an interface
        for name, addrs in psutil.net_if_addrs().items():
            if any(a.family == socket.AF_INET and a.address == addr for a in addrs):
                return name
    except ImportError:
        for _, name in socket.if_nameindex():
            if ipv4_of(name) == addr:
                return name
    raise HvdlmError(f"no local interface holds address {addr}")


def source_address(dest: str) -> str:
    """The local address the kernel would use to reach `dest` (a UDP connect sends nothing)."""
    if ipaddress.ip_address(dest).is_loopback:
        return dest
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((dest, 9))
        except OSError as err:
            raise HvdlmError(f"no route to the rendezvous address {dest}: {err}") from None
        return s.getsockname()[0]


def iface_towards(dest: str) -> str:
    """The interface this task's Gloo traffic to `dest` leaves from (HOROVOD_GLOO_IFACE)."""
    return iface_of_address(source_address(dest))


def resolve_ipv4(name: str) -> str | None:
    """The first IPv4 address `name` resolves to, or None."""
    try:
        return socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except (socket.gaierror, IndexError):
        return None


def _main(argv: Sequence[str] | None) -> int:
    p = cli.ArgumentParser(prog="hvdlm.cluster.rendezvous",
                           description="Serve one job's Gloo rendezvous until stdin closes.")
    p.add_argument("--hosts", required=True, help="the job's plan, HOST:SLOTS,...")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--bind-host", help="bind the address this host name resolves to")
    where.add_argument("--bind-addr", help="bind this address")
    args = p.parse_args(argv)
    addr = args.bind_addr or resolve_ipv4(args.bind_host)
    if addr is None:
        raise HvdlmError(f"host name {args.bind_host!r} does not resolve here")
    server = JobRendezvous(addr, parse_hosts(args.hosts))
    print(f"{server.addr} {server.port}", flush=True)
    try:
        sys.stdin.read()  # returns at EOF: the launcher closed the pipe or died
    finally:
        server.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv, prog="hvdlm.cluster.rendezvous")


if __name__ == "__main__":
    sys.exit(main())
