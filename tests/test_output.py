"""hvdlm/output.py: atomic files (with their permissions) and complete-or-absent folders."""
from __future__ import annotations

import errno
import os
import re

import pytest

from hvdlm import output
from hvdlm.errors import DataError

DATASET = output.Overwrite(True, "manifest.json", "a dataset")


@pytest.fixture
def umask():
    def set_(mask: int) -> None:
        os.umask(mask)
    old = os.umask(0o022)
    yield set_
    os.umask(old)


def test_write_atomic_mode_is_exact_and_default_follows_umask(tmp_path, umask):
    umask(0o027)
    output.write_atomic(tmp_path / "shared", b"a")
    output.write_atomic(tmp_path / "secret", b"b", mode=0o600)
    umask(0o277)  # a mask that would take the owner's write bit: mode still wins
    output.write_atomic(tmp_path / "secret", b"c", mode=0o600)
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "secret").read_bytes() == b"c"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret", "shared"]


def test_replacing_renames_on_success_and_removes_on_failure(tmp_path):
    path = tmp_path / "shard.h5"
    with output.replacing(path) as tmp:
        assert tmp.parent == tmp_path and not tmp.exists()
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    with pytest.raises(OSError) as caught:
        with output.replacing(path) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")  # as h5py raises it
    assert caught.value.filename == str(tmp)  # named, for the one-line full-disk error
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("overwrite, message", [
    (None, "already exists; choose a new --out"),
    (output.Overwrite(False, "manifest.json", "a dataset"), "already exists (use --overwrite"),
    (DATASET, "not a dataset (no manifest.json); --overwrite replaces only those"),
])
def test_an_existing_out_is_refused_before_any_work(tmp_path, overwrite, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    with pytest.raises(DataError, match=re.escape(message)):
        with output.staged(out, overwrite):
            raise AssertionError("the work ran")
    assert os.listdir(tmp_path) == ["out"] and os.listdir(out) == ["mine.txt"]


def test_staged_publishes_into_an_empty_folder_or_over_an_earlier_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for text in ("first", "second"):
        with output.staged(out, DATASET) as stage:
            assert stage == tmp_path / "out.partial" and not any(stage.iterdir())
            (stage / "manifest.json").write_text(text)
        assert (out / "manifest.json").read_text() == text
        assert os.listdir(tmp_path) == ["out"]  # no stage, no old copy left


def test_a_failure_leaves_neither_out_nor_stage_and_a_full_disk_is_one_line(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"report\.json: cannot write \(No space left"):
        with output.staged(out) as stage:
            (stage / "report.json").write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(KeyboardInterrupt):
        with output.staged(out):
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []
