"""Checkpoints: atomic and checksummed, data on disk before its checksum and `latest`; corrupt
ones skipped; a full disk (RLIMIT_FSIZE, and a real one: a small tmpfs) leaves the last intact;
anything but plain weights refused; pruning and `--resume auto` follow the run's lineage after
it went back to an older checkpoint, whose steps are then logged once."""
import io
import os
import re
import resource
import shutil
import signal

import pytest
import torch

from hvdlm.errors import CheckpointError
from hvdlm.training import checkpoint
from tests.small_disk import PAGE, fill, needs_root, small_disk


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


# ---- write order, lineage and a real full disk ----------------------------------------------

def big_state(step: int, mib: float = 1.2) -> checkpoint.TrainingState:
    big = state(step)
    big.model = {"w": torch.full((int(mib * 2**20) // 4,), float(step))}
    return big


def test_save_writes_data_then_checksum_then_latest(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    checkpoint.save(tmp_path, state(1), keep=3)
    name = "step-00000001.pt"
    temp = re.compile(rf"\.{re.escape(name)}\.tmp\d{{18}}")  # an unguessable name
    order = [(e[0], "TEMP" if temp.fullmatch(e[1]) else e[1]) for e in events
             if e[0] == "replace" or temp.fullmatch(e[1]) or e[1] == "checkpoints"]
    # The data is on disk before any name points at it; the pair is durable before `latest`.
    assert order == [("fsync", "TEMP"), ("replace", name),
                     ("replace", name + ".sha256"), ("fsync", "checkpoints"),
                     ("replace", "latest"), ("fsync", "checkpoints")]


def test_pruning_keeps_the_checkpoint_just_written_not_an_abandoned_lineage(tmp_path):
    for step in (3, 6, 9):
        checkpoint.save(tmp_path, state(step), keep=3)
    # A run resumed from step 3 (`--resume PATH`) saves step 4: 6 and 9 are another lineage.
    checkpoint.save(tmp_path, state(4), keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == \
        ["step-00000003.pt", "step-00000004.pt"]
    assert checkpoint.load_latest(tmp_path)[1].step == 4
    checkpoint.save(tmp_path, state(5), keep=1)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-00000005.pt"]


def test_after_going_back_auto_never_falls_forward_to_the_abandoned_lineage(tmp_path):
    for step in (3, 6):
        checkpoint.save(tmp_path, state(step), keep=3)
    checkpoint.adopt(tmp_path, checkpoint.checkpoint_dir(tmp_path) / "step-00000003.pt")
    assert checkpoint.load_latest(tmp_path)[1].step == 3  # before the resumed run saves
    (checkpoint.checkpoint_dir(tmp_path) / "step-00000003.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        checkpoint.load_latest(tmp_path)  # not step 6: that is not this run's past


def test_debris_of_a_killed_save_is_removed_by_the_next(tmp_path):
    checkpoint.save(tmp_path, state(1), keep=3)
    folder = checkpoint.checkpoint_dir(tmp_path)
    (folder / ".step-00000002.pt.tmp12345").write_bytes(b"half a checkpoint")
    assert checkpoint.load_latest(tmp_path)[1].step == 1
    checkpoint.save(tmp_path, state(2), keep=3)
    assert sorted(p.name for p in folder.iterdir()) == [
        "latest", "step-00000001.pt", "step-00000001.pt.sha256", "step-00000002.pt",
        "step-00000002.pt.sha256"]


@needs_root
def test_disk_full_during_save_is_one_line_and_keeps_the_previous(tmp_path):
    with small_disk(tmp_path / "disk", "2m") as disk:
        previous = checkpoint.save(disk, big_state(1), keep=3)
        with pytest.raises(CheckpointError) as err:
            checkpoint.save(disk, big_state(2), keep=3)  # 2 x 1.2 MiB > 2 MiB
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{disk}/checkpoints/step-00000002.pt")
        assert "No space left on device" in message and "previous checkpoint is intact" in message
        assert sorted(p.name for p in previous.parent.iterdir()) == \
            ["latest", "step-00000001.pt", "step-00000001.pt.sha256"]
        assert torch.equal(checkpoint.load_latest(disk)[1].model["w"], big_state(1).model["w"])


@needs_root
def test_disk_full_when_replacing_a_step_never_leaves_a_mismatched_pair(tmp_path):
    """A run resumed from an older checkpoint saves a step the run already has. With room for
    about the data alone, each save either fails and leaves the old pair, or succeeds: the
    step always loads, old or new, never data beside another's checksum."""
    with small_disk(tmp_path / "disk", "4m") as disk:
        buffer = io.BytesIO()
        torch.save(big_state(2).to_dict(), buffer)
        pages = -(-len(buffer.getvalue()) // PAGE)
        new = big_state(2)
        new.model["w"] += 1  # same size, other bytes
        for room in (pages - 1, pages, pages + 1):
            shutil.rmtree(disk / "checkpoints", ignore_errors=True)
            path = checkpoint.save(disk, big_state(2), keep=3)
            fill(disk, leave=room * PAGE)
            try:
                checkpoint.save(disk, new, keep=3)
                expected = new
            except CheckpointError as err:
                assert "No space left on device" in str(err)
                expected = big_state(2)
            (disk / "filler").unlink()
            assert torch.equal(checkpoint.load(path).model["w"], expected.model["w"]), room
            assert not [p for p in path.parent.iterdir() if "tmp" in p.name]


# ---- a resumed run: its own lineage, each step logged once ----------------------------------

def _trainer(data, run, resume, *overrides):
    from hvdlm.cluster.distributed import World
    from hvdlm.config import load_config
    from hvdlm.training.trainer import Trainer
    from tests.conftest import TINY_RUN
    run.mkdir(parents=True, exist_ok=True)
    world = World(rank=0, size=1, local_rank=0, local_size=1, device=torch.device("cpu"))
    return Trainer(load_config(None, [*TINY_RUN, "train.eval_interval=2", "train.eval_batches=1",
                                      *overrides]), data, run, world, resume)


def _tensorboard_steps(run, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def test_run_resumed_from_an_older_checkpoint_continues_its_own_lineage(
        byte_dataset, tmp_path, own_signal_handlers):
    import time

    from hvdlm.training.record.logs import read_metrics
    run = tmp_path / "run"
    assert _trainer(byte_dataset, run, "never", "train.max_steps=6",
                    "train.ckpt_interval=2").run() == 0
    started = time.time()
    # Back to step 2, killed before it saves anything: `auto` must now mean step 2, not 6.
    _trainer(byte_dataset, run, str(run / "checkpoints" / "step-00000002.pt"))
    again = _trainer(byte_dataset, run, "auto", "train.max_steps=5", "train.ckpt_interval=1",
                     "train.keep_checkpoints=1")
    assert again.resumed_from == 2
    time.sleep(max(0.0, 1.01 - (time.time() - started)))  # TensorBoard orders files by second
    assert again.run() == 0
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["step-00000005.pt"]
    assert checkpoint.load_latest(run)[1].step == 5
    # Steps 3-6 of the first lineage are gone from the logs; 3-5 of this one are there once.
    records = read_metrics(run)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4, 5]
    assert _tensorboard_steps(run, "train/loss") == [1, 2, 3, 4, 5]
    assert _tensorboard_steps(run, "val/loss") == [2, 4, 5]


@needs_root
def test_training_on_a_full_disk_stops_with_one_line_and_a_sound_checkpoint(byte_dataset,
                                                                            tmp_path):
    from tests.conftest import TINY_RUN, run_module
    with small_disk(tmp_path / "disk", "2m") as disk:  # room for one 1.2 MB checkpoint
        run = disk / "run"
        proc = run_module("hvdlm.train", "--data", byte_dataset, "--out", run, *TINY_RUN,
                          "model.n_embd=80", "train.ckpt_interval=1", timeout=240)
        errors = re.findall(r"hvdlm\.train: error: .*", proc.stderr)  # after the bar, if any
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and errors == [
            f"hvdlm.train: error: {run}/checkpoints/step-00000002.pt: could not save checkpoint "
            "(No space left on device); the previous checkpoint is intact"], proc.stderr
        assert checkpoint.load_latest(run)[1].step == 1
        assert not [p for p in (run / "checkpoints").iterdir() if "tmp" in p.name]
