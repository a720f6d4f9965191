"""A real second, unprivileged Unix user for the security tests (they run as root in CI).

    def test_x(attacker):
        proc = attacker.run([sys.executable, "-c", "..."])   # runs as that user

The user is created once (useradd, no home, no login shell) and kept: creating it again on every
run would only churn /etc/passwd. Its commands get a clean environment and no supplementary
groups, so they can do exactly what any other user of a shared node can.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pytest

NAME = "hvdlm-attacker"


@dataclass(frozen=True)
class Attacker:
    name: str
    uid: int
    gid: int

    def run(self, argv: Sequence[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        """Run argv as the attacker (setpriv: its uid/gid, no groups), output captured as text."""
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
               "--", *map(str, argv)]
        env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**env, **kwargs.pop("env", {})}, **kwargs)


def ensure_attacker() -> Attacker:
    """The attacker user, created if missing; pytest.skip when that is impossible (not root)."""
    if os.geteuid() != 0:
        pytest.skip("a second Unix user needs root to create and to switch to")
    if shutil.which("setpriv") is None or shutil.which("useradd") is None:
        pytest.skip("setpriv and useradd (util-linux, passwd) are needed for a second user")
    try:
        entry = pwd.getpwnam(NAME)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        NAME], check=True, capture_output=True, timeout=30)
        entry = pwd.getpwnam(NAME)
    return Attacker(NAME, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="session")
def attacker() -> Attacker:
    return ensure_attacker()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A fresh folder both users can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="hvdlm-security-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
