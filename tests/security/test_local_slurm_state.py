"""tests/infra/local-slurm.sh runs as root: another user must not be able to pre-create its state
folder or plant a symlink there that turns root's writes (lock, logs, slurm.conf, which is then
installed into /etc/slurm) into writes anywhere. The attacks are made by a real second Unix user
on a state folder inside a shared, sticky folder (like /tmp), and only `check-state` runs, the
check that `start` and `stop` make before they touch anything: no daemon is started or stopped.
The test fixture's own check (tests/slurm/conftest.py) must refuse the same folders."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.slurm.conftest import SCRIPT, UnsafeStateError, check_state_dir

pytestmark = pytest.mark.security


def check_state(state: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "check-state"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SLURM_STATE": str(state)})


def assert_refused(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Non-zero, nothing on stdout, exactly one line on stderr that names the reason."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("local-slurm: refusing"), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def snapshot(path: Path) -> tuple:
    """What must not change: the content, mode, owner and mtime of a file, or the listing of a
    folder with those of each entry."""
    st = os.lstat(path)
    head = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime_ns)
    if stat.S_ISDIR(st.st_mode):
        return head + tuple((p.name, snapshot(p)) for p in sorted(path.iterdir()))
    return head + (path.read_bytes(),)


@pytest.fixture
def shared(open_dir) -> Path:
    """A folder everyone may create entries in, sticky like /tmp (root-owned)."""
    path = open_dir / "shared"
    path.mkdir()
    path.chmod(0o1777)
    return path


@pytest.fixture
def decoy(open_dir) -> Path:
    """A root-owned file the attacker would like root to overwrite."""
    path = open_dir / "decoy"
    path.write_text("root's file: must stay as it is\n")
    path.chmod(0o644)
    return path


def test_missing_state_folder_is_created_root_only(shared):
    state = shared / "state"
    proc = check_state(state)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(state)
    st = os.lstat(state)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700
    assert list(state.iterdir()) == []
    assert check_state(state).returncode == 0   # an existing safe folder is accepted again
    check_state_dir(state)


def test_folder_precreated_by_another_user_is_refused(attacker, shared):
    state = shared / "state"
    made = attacker.run(["mkdir", state])
    assert made.returncode == 0, made.stderr
    before = snapshot(state)
    assert_refused(check_state(state), str(state), "owned by uid", attacker.name)
    assert snapshot(state) == before          # nothing written there, nothing re-owned
    assert os.lstat(state).st_uid == attacker.uid
    with pytest.raises(UnsafeStateError, match="not root"):
        check_state_dir(state)


@pytest.mark.parametrize("target_kind", ["file", "root-folder"])
def test_symlink_at_state_path_is_refused(attacker, shared, decoy, open_dir, target_kind):
    # a root-owned folder as the target would pass every owner check if the link were followed
    target = decoy
    if target_kind == "root-folder":
        target = open_dir / "root-folder"
        target.mkdir(mode=0o700)
        (target / "slurm.conf").write_text("root's slurm.conf\n")
    before = snapshot(target)
    state = shared / "state"
    planted = attacker.run(["ln", "-s", target, state])
    assert planted.returncode == 0, planted.stderr
    assert_refused(check_state(state), str(state), "symlink")
    assert snapshot(target) == before
    assert os.path.islink(state) and os.readlink(state) == str(target)
    with pytest.raises(UnsafeStateError, match="symlink"):
        check_state_dir(state)


@pytest.mark.parametrize("where", [".lock", "apt.log", "etc/slurm.conf", "etc/db-password"])
def test_symlink_planted_inside_state_folder_is_refused(attacker, shared, decoy, where):
    # root's folder was once open to everyone (mode 0777): refused as it is, and still refused
    # after root tightened it, because the attacker's symlink is still inside
    state = shared / "state"
    state.mkdir()
    state.chmod(0o777)
    if "/" in where:
        (state / "etc").mkdir()
        (state / "etc").chmod(0o777)
    assert_refused(check_state(state), "writable by group or others")
    planted = attacker.run(["ln", "-s", decoy, state / where])
    assert planted.returncode == 0, planted.stderr
    before = snapshot(decoy)
    for folder in (state, state / "etc"):
        if folder.exists():
            folder.chmod(0o755)
    assert_refused(check_state(state), "symlink", str(state / where))
    assert snapshot(decoy) == before
    assert os.path.islink(state / where)
    with pytest.raises(UnsafeStateError, match="symlink"):
        check_state_dir(state)


def test_state_under_a_folder_of_another_user_is_refused(attacker, shared):
    # the attacker owns the folder above: it could swap root's state folder after the check
    above = shared / "mine"
    assert attacker.run(["mkdir", above]).returncode == 0
    before = snapshot(above)
    assert_refused(check_state(above / "state"), str(above), "not root")
    assert snapshot(above) == before
    with pytest.raises(UnsafeStateError, match="above it"):
        check_state_dir(above / "state")


def test_folder_of_another_user_in_the_state_is_refused(attacker, shared):
    state = shared / "state"
    state.mkdir(mode=0o755)
    (state / "etc").mkdir()
    os.chown(state / "etc", attacker.uid, attacker.gid)
    before = snapshot(state)
    assert_refused(check_state(state), "subfolder etc", attacker.name)
    assert snapshot(state) == before
