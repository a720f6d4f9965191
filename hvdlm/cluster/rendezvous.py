"""Horovod's Gloo rendezvous server, bound to one address, and how other tasks find it.

Horovod's `RendezvousServer.start()` listens on every interface (`('', port)`) and its `stop()`
leaves the socket open. A job needs neither: `JobRendezvous` binds only the address the job's
ranks use and closes the socket when the job ends. Rank 0 publishes `addr port secret` in a file
(written atomically) that the other tasks wait for, with a deadline, then probe.

`--hosts --netns` runs the server inside the first emulated host's namespace with this module's
command line; it prints `ADDR PORT` and serves until its stdin closes (its parent ended):

    HOROVOD_GLOO_RENDEZVOUS_SECRET=... ip netns exec node01 \
        python -m hvdlm.cluster.rendezvous --bind-host node01 --hosts node01:1,node02:1

Only the job's own ranks may read or write it. The launcher makes a per-job secret
(`new_secret`) and gives it to each rank in HOROVOD_GLOO_RENDEZVOUS_SECRET (the environment of
a process is readable by its owner and root only); Horovod's C++ HTTP store, patched by
scripts/horovod-patches/gloo-rendezvous-secret.patch, sends it as `Authorization: Bearer` with
every request. `AuthRendezvousHandler` refuses (403, one line on stderr naming the client) any
request without it before touching the store, and refuses oversized bodies (413) unread. Under
srun the secret travels with the address in the rendezvous file, which is 0600 in a folder only
its owner may write (`secure_dir`, `publish`, `read_published` refuse anything else).
"""
from __future__ import annotations

import errno
import fcntl
import hmac
import ipaddress
import os
import re
import secrets
import socket
import stat
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer
from horovod.runner.util.threads import in_thread

from hvdlm import cli, output
from hvdlm.cluster.hostlist import assign_slots, parse_hosts
from hvdlm.errors import HvdlmError, UsageError

SECRET_ENV = "HOROVOD_GLOO_RENDEZVOUS_SECRET"  # read by the patched C++ HTTP store too
MIN_BODY_LIMIT = 64 * 1024   # bytes of one PUT; Gloo's largest value is ~136 B per peer rank
BODY_BYTES_PER_RANK = 256    # so the limit grows with the job: max(64 KiB, 256 B x size)
MAX_LOGGED_REFUSALS = 100    # a flood cannot fill the job's log


def new_secret() -> str:
    """A per-job secret: 256 random bits, hex (safe in an HTTP header and an environment)."""
    return secrets.token_hex(32)


class AuthRendezvousHandler(RendezvousHandler):
    """Horovod's rendezvous handler behind a secret: 403 without it, 413 for a huge body.

    Every check runs before Horovod's handler sees the request, so a refused request never
    reads, adds, deletes or finishes anything in the store.
    """

    def _refuse(self, code: int, reason: str) -> None:
        server = self.server
        with server.refusals_lock:
            server.refusals += 1
            n = server.refusals
        if n <= MAX_LOGGED_REFUSALS:
            host, port = self.client_address[:2]
            more = "; further refusals are not logged" if n == MAX_LOGGED_REFUSALS else ""
            print(f"hvdlm.rendezvous: refused {self.command} {self.path[:80]!r} from "
                  f"{host}:{port}: {reason}{more}", file=sys.stderr, flush=True)
        self.close_connection = True  # an unread body must not be parsed as the next request
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    def _allowed(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # latin-1: how http.client decoded the header, so every value encodes back.
        if not (scheme == "Bearer" and hmac.compare_digest(given.strip().encode("latin-1"),
                                                           self.server.secret)):
            self._refuse(403, "no valid rendezvous secret" if header else "no rendezvous secret")
            return False
        if self.command == "PUT":
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():
                self._refuse(400, "PUT without a valid Content-Length")
                return False
            if int(length) > self.server.body_limit:
                self._refuse(413, f"body of {length} bytes (limit {self.server.body_limit})")
                return False
        if self.path.count("/") != 2:
            self._refuse(400, "not /SCOPE/KEY")
            return False
        return True

    def do_GET(self):
        if self._allowed():
            super().do_GET()

    def do_PUT(self):
        if self._allowed():
            super().do_PUT()

    def do_DELETE(self):
        if self._allowed():
            super().do_DELETE()

    def do_HEAD(self):  # SimpleHTTPRequestHandler's would describe files of our cwd
        if self._allowed():
            self._refuse(405, f"{self.command} is not part of the rendezvous")

    do_POST = do_HEAD


class _AuthServer(RendezvousHTTPServer):
    # A client stalling mid-request (3 s read timeout each) must not hold close() up.
    daemon_threads = True
    block_on_close = False

    def __init__(self, addr, secret: str, body_limit: int, verbose: int):
        super().__init__(addr, AuthRendezvousHandler, verbose)
        self.secret = secret.encode("latin-1")
        self.body_limit = body_limit
        self.refusals_lock = threading.Lock()
        self.refusals = 0


class JobRendezvous:
    """Horovod's RendezvousServer on (addr, OS-chosen port), initialised with the job's plan,
    answering only requests that carry `secret`.

    It serves until `close()`, i.e. as long as the job, not just until every rank's hvd.init()
    returns: Horovod rendezvouses again after init, through this server, whenever a rank adds
    a process set (hvd.add_process_set with HOROVOD_DYNAMIC_PROCESS_SETS=1) and in elastic
    mode; process sets given to hvd.init() rendezvous in their own scopes after the global one;
    and the launcher cannot see which of these the command does. Authenticated, the open port
    gives other users nothing.
    """

    def __init__(self, addr: str, hosts: Sequence[tuple[str, int]], secret: str,
                 verbose: int = 0):
        if not re.fullmatch(r"[0-9A-Za-z_.~+/=-]{16,}", secret or ""):
            raise HvdlmError("the rendezvous secret must be at least 16 header-safe characters")
        size = sum(n for _, n in hosts)
        try:
            # Port 0: the kernel picks a free port atomically (Horovod tries random ones).
            self._httpd = _AuthServer((addr, 0), secret,
                                      max(MIN_BODY_LIMIT, BODY_BYTES_PER_RANK * size), verbose)
        except OSError as err:
            raise HvdlmError(f"cannot start the rendezvous server on {addr}: {err}") from None
        self.addr, self.port = addr, self._httpd.server_address[1]
        self._httpd.init(assign_slots(hosts))  # the plan the launcher gives each rank
        self._thread = in_thread(target=self._httpd.serve_forever)

    @property
    def refusals(self) -> int:
        return self._httpd.refusals

    def close(self) -> None:
        """Stop serving and release the port: the server lives only as long as the job."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _refuse_path(what: str, path: Path, problem: str) -> HvdlmError:
    return HvdlmError(f"refusing the rendezvous {what} {path}: {problem} (give "
                      f"--rendezvous-dir a folder only you can write)")


def secure_dir(path: Path) -> Path:
    """Create `path` 0700 if missing; refuse it if someone else owns it or others may write it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError as err:
        raise _refuse_path("folder", path, err.strerror or str(err)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse_path("folder", path, "not a folder")
    _require_own("folder", path, st, 0o022, "writable")
    return path


def _require_own(kind: str, path: Path, st: os.stat_result, bits: int, allows: str) -> None:
    """Refuse `path` unless this user owns it and its mode has none of `bits` set."""
    if st.st_uid != os.geteuid():
        raise _refuse_path(kind, path, f"owned by uid {st.st_uid}, not by you "
                                       f"(uid {os.geteuid()})")
    if st.st_mode & bits:
        raise _refuse_path(kind, path, f"{allows} by group or others "
                                       f"(mode {stat.S_IMODE(st.st_mode):04o})")


def publish(path: Path, addr: str, port: int, secret: str) -> None:
    """Write `addr port secret` to `path` (0600) atomically, so a reader never sees half a line.

    The temporary file (output.write_temp) is opened O_EXCL|O_NOFOLLOW: nothing planted there
    is followed or reused; the rename replaces whatever `path` was, never writing through it.
    """
    secure_dir(path.parent)
    try:
        output.write_atomic(path, f"{addr} {port} {secret}\n".encode(), mode=0o600)
    except OSError as err:
        raise _refuse_path("file", path, err.strerror or str(err)) from None


def read_published(path: Path) -> tuple[str, int, str] | None:
    """(addr, port, secret) from `path`, None if it is missing; HvdlmError if it is not a plain
    file of ours that only we can read and write (a symlink, a FIFO, planted by another user);
    ValueError if it is malformed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:
        problem = "a symbolic link" if err.errno == errno.ELOOP else err.strerror or str(err)
        raise _refuse_path("file", path, problem) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse_path("file", path, "not a regular file")
        _require_own("file", path, st, 0o077, "readable or writable")
        addr, port_text, secret = f.read(4096).decode("ascii").split()
    return addr, int(port_text), secret


def wait_for(path: Path, timeout_s: float) -> tuple[str, int, str]:
    """Wait until `path` names a server that accepts connections; HvdlmError at the deadline.

    Returns (addr, port, secret). The probe matters after a requeue or a crash: a file left by
    an earlier run names a port that no longer answers, and we keep waiting for rank 0 to
    replace it. A folder or file that fails the ownership and mode checks is refused at once.
    """
    secure_dir(path.parent)
    deadline = time.monotonic() + timeout_s
    last = "no rendezvous file yet"
    while True:
        try:
            found = read_published(path)
            if found is not None:
                addr, port, secret = found
                with socket.create_connection((addr, port), timeout=2):
                    return addr, port, secret
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
    secret = os.environ.get(SECRET_ENV)
    if not secret:  # never on the command line: other users can read that (/proc/PID/cmdline)
        raise UsageError(f"set {SECRET_ENV} in this command's environment")
    server = JobRendezvous(addr, parse_hosts(args.hosts), secret)
    print(f"{server.addr} {server.port}", flush=True)
    try:
        sys.stdin.read()  # returns at EOF: the launcher closed the pipe or died
    finally:
        server.close()
    return 0


main = cli.entry_point(_main, "hvdlm.cluster.rendezvous")

if __name__ == "__main__":
    sys.exit(main())
