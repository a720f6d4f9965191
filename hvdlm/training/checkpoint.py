"""Checkpoints: one training-state record, atomic, checksummed, loaded without unpickling.

`TrainingState` is everything a run needs to continue exactly (model and optimizer state
dicts, step, consumed samples, per-rank RNG states, the config, the tokenizer's digest, the
world size); RUN/checkpoints/step-NNNNNNNN.pt holds it as a plain dict,
step-NNNNNNNN.pt.sha256 its checksum, and `latest` names the newest file of the run's lineage.
The data and its checksum are written to temporary names and fsynced, then renamed (data first),
then `latest` is rewritten: a crash or a full disk leaves the previous checkpoint intact, and
only a pair on disk is ever named. A save at step S removes the checkpoints above S (an
abandoned lineage: the run went back to an older checkpoint), then all but the newest `keep`.
Loading uses `torch.load(weights_only=True)`: a file that needs any other unpickling is refused,
and so is one whose weights hold NaN or inf (load_latest then goes back to a finite one).
A corrupt newest checkpoint is reported and the one before it is used. Commands open a trained
run, model included, through hvdlm/training/run.py's `Run`.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from hvdlm import untrusted
from hvdlm.errors import CheckpointError, DataError
from hvdlm.output import fsync_dir, private_mode, write_atomic, write_temp
from hvdlm.training.stored_config import non_finite

log = logging.getLogger("hvdlm")
NAME = re.compile(r"^step-(\d{8})\.pt$")
MAX_CHECKPOINT_BYTES = 1 << 40  # 1 TiB: a bound for reading; a regular file's size is known


@dataclass
class TrainingState:
    """The one record a checkpoint holds; `Trainer` captures and restores it as a whole."""

    model: dict[str, Any]
    optimizer: dict[str, Any]
    step: int                   # optimizer steps taken
    consumed_samples: int       # global samples consumed (the data position)
    config: dict[str, Any]      # the resolved Config as a dict
    tokenizer_sha256: str | None = None
    world_size: int = 1
    rng: list[torch.Tensor] | None = None  # torch's RNG state of each rank, in rank order
    scaler: dict[str, Any] | None = None  # fp16's loss scale (training/precision.py), else None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # no deep copy of tensors

    @classmethod
    def from_dict(cls, state: dict[str, Any], source: Path) -> "TrainingState":
        missing = {"model", "optimizer", "step", "consumed_samples", "config"} - set(state)
        if missing:
            raise CheckpointError(f"{source}: not an hvdlm checkpoint (missing "
                                  f"{', '.join(sorted(missing))})")
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})

    def require_tokenizer(self, tokenizer_sha256: str, tokenizer_file: str | Path) -> None:
        """DataError unless `tokenizer_file` (with that digest) is the one trained with."""
        if self.tokenizer_sha256 != tokenizer_sha256:
            raise DataError(f"{tokenizer_file}: not the tokenizer this checkpoint was trained "
                            "with (tokenizer sha256 mismatch)")


def checkpoint_dir(run: str | Path) -> Path:
    return Path(run) / "checkpoints"


def _step_of(path: Path) -> int:
    return int(NAME.match(path.name)[1])


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".sha256").unlink(missing_ok=True)


def _remove_debris(folder: Path) -> None:
    """Temporary files of a writer killed mid-save (one writer per run: RUN is locked)."""
    for tmp in folder.glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def _commit(folder: Path, path: Path, data: bytes) -> None:
    """Both files on disk under temporary names, then renamed: data, checksum, `latest`."""
    sidecar = path.with_name(path.name + ".sha256")
    temps = []
    try:
        temps.append(write_temp(path, data, private=True))
        temps.append(write_temp(sidecar, hashlib.sha256(data).hexdigest().encode(),
                                private=True))
        # Renames take no space, so a full disk cannot split the pair; a crash between them
        # leaves new data beside no or an old checksum, which `load` refuses.
        os.replace(temps[0], path)
        os.replace(temps[1], sidecar)
        fsync_dir(folder)  # the pair is durable before `latest` names it
        write_atomic(folder / "latest", path.name.encode())
        fsync_dir(folder)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


def save(run: str | Path, state: TrainingState, keep: int) -> Path:
    """Write step-NNNNNNNN.pt (+ .sha256, then `latest`), then prune: the checkpoints above
    this step (an abandoned lineage) and all but the newest `keep` of the rest."""
    folder = checkpoint_dir(run)
    folder.mkdir(mode=private_mode(folder=True), parents=True, exist_ok=True)
    _remove_debris(folder)
    path = folder / f"step-{state.step:08d}.pt"
    buffer = io.BytesIO()
    torch.save(state.to_dict(), buffer)
    try:
        _commit(folder, path, buffer.getvalue())
    except OSError as err:
        raise CheckpointError(f"{path}: could not save checkpoint ({err.strerror or err}); "
                              "the previous checkpoint is intact") from None
    found = list_checkpoints(run)
    abandoned = [p for p in found if _step_of(p) > state.step]
    lineage = [p for p in found if _step_of(p) <= state.step]  # this one last: never pruned
    for old in abandoned + lineage[:-keep]:
        _remove(old)
    return path


def adopt(run: str | Path, path: Path) -> None:
    """Point `latest` at `path` when the run resumed from one of its own older checkpoints, so
    the next `--resume auto` continues this lineage even before it saves."""
    folder = checkpoint_dir(run)
    if NAME.match(path.name) and path.parent.resolve() == folder.resolve():
        write_atomic(folder / "latest", path.name.encode())
        fsync_dir(folder)


def list_checkpoints(run: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = checkpoint_dir(run)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if NAME.match(p.name))


def load(path: str | Path) -> TrainingState:
    """Load one checkpoint after checking its checksum; CheckpointError if it is not sound."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".sha256")
    try:  # regular files only, the checksum's size bounded (hvdlm/untrusted.py)
        data = untrusted.read_bytes(path, MAX_CHECKPOINT_BYTES, "checkpoint")
        if not sidecar.exists():
            raise CheckpointError(f"{path}: no checksum file {sidecar.name} beside it")
        digest = untrusted.read_bytes(sidecar, 4096, "checksum file")
    except DataError as err:
        raise CheckpointError(str(err)) from None
    if digest.strip() != hashlib.sha256(data).hexdigest().encode():
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupted)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: refused, not a plain weights-only checkpoint "
                              f"({first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not an hvdlm checkpoint (not a dict)")
    loaded = TrainingState.from_dict(state, path)
    bad = non_finite(loaded.model) if isinstance(loaded.model, dict) else "model"
    if bad:  # such weights make every later step and every result NaN
        raise CheckpointError(f"{path}: weight {bad} holds NaN or inf values; refused")
    return loaded


def load_latest(run: str | Path) -> tuple[Path, TrainingState] | None:
    """The newest sound checkpoint of the run's lineage, skipping (and reporting) corrupt ones.

    The file `latest` names comes first, then the others up to its step, newest first (those
    above it belong to an abandoned lineage, or were never committed). None if the run has no
    checkpoint at all; CheckpointError if none of them is sound.
    """
    candidates = list(reversed(list_checkpoints(run)))
    pointer = checkpoint_dir(run) / "latest"
    try:
        named = untrusted.read_text(pointer, 4096, "checkpoint pointer", follow=False).strip() \
            if pointer.exists() or pointer.is_symlink() else ""
    except DataError as err:
        log.warning("ignoring %s", err)
        named = ""
    if NAME.match(named):
        candidates = [p for p in candidates if _step_of(p) <= _step_of(Path(named))]
    first = [p for p in candidates if p.name == named]
    problems = []
    for path in first + [p for p in candidates if p not in first]:
        try:
            found = path, load(path)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        for problem in problems:  # said once a sound one is found; else the error says it
            log.warning("skipping checkpoint: %s", problem)
        return found
    if problems:
        raise CheckpointError(f"no usable checkpoint in {checkpoint_dir(run)}: {problems[0]}")
    return None

