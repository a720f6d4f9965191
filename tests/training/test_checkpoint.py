"""Checkpoints: atomic and checksummed; corrupt ones skipped; a full disk leaves the last intact;
anything but plain weights refused."""
import io
import os
import resource
import signal

import pytest
import torch

from hvdlm.errors import CheckpointError
from hvdlm.training import checkpoint


def state(step: int) -> checkpoint.TrainingState:
    return checkpoint.TrainingState(
        model={"w": torch.full((64, 64), float(step))}, optimizer={"state": {}}, step=step,
        consumed_samples=step * 8, config={"model": {}, "train": {}},
        rng=[torch.get_rng_state()])


def test_save_keeps_the_newest_and_loads_back(tmp_path):
    for step in (1, 2, 3, 4):
        checkpoint.save(tmp_path, state(step), keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == \
        ["step-00000003.pt", "step-00000004.pt"]
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step-00000004.pt"
    path, loaded = checkpoint.load_latest(tmp_path)
    assert loaded.step == 4 and torch.equal(loaded.model["w"], state(4).model["w"])
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_latest_falls_back_to_previous(damage, tmp_path, caplog):
    checkpoint.save(tmp_path, state(1), keep=3)
    newest = checkpoint.save(tmp_path, state(2), keep=3)
    data = bytearray(newest.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        checkpoint.load(newest)
    path, loaded = checkpoint.load_latest(tmp_path)
    assert loaded.step == 1
    assert "step-00000002.pt" in caplog.text


def test_no_sound_checkpoint_is_one_clear_error(tmp_path):
    only = checkpoint.save(tmp_path, state(1), keep=3)
    only.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint") as err:
        checkpoint.load_latest(tmp_path)
    assert "\n" not in str(err.value)
    assert checkpoint.load_latest(tmp_path / "fresh") is None


class Payload:
    """Stands for any object a malicious checkpoint could smuggle in through pickle."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_objects_are_refused(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    buffer = io.BytesIO()
    torch.save({**state(1).to_dict(), "extra": Payload()}, buffer)
    path = folder / "step-00000001.pt"
    path.write_bytes(buffer.getvalue())
    import hashlib
    (folder / "step-00000001.pt.sha256").write_text(hashlib.sha256(buffer.getvalue()).hexdigest())
    with pytest.raises(CheckpointError, match="refused"):
        checkpoint.load(path)


def test_full_disk_keeps_the_previous_checkpoint(tmp_path):
    previous = checkpoint.save(tmp_path, state(1), keep=3)
    before = previous.read_bytes()
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then writes fail with EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(CheckpointError, match="could not save checkpoint"):
            checkpoint.save(tmp_path, state(2), keep=3)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert previous.read_bytes() == before
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000001.pt"]
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step-00000001.pt"
    leftovers = {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert leftovers == {"latest", "step-00000001.pt", "step-00000001.pt.sha256"}
    assert checkpoint.load_latest(tmp_path)[1].step == 1
