"""Checkpoints: one training-state record, atomic, checksummed, loaded without unpickling.

`TrainingState` is everything a run needs to continue exactly (model and optimizer state
dicts, step, consumed samples, per-rank RNG states, the config, the tokenizer's digest, the
world size); RUN/checkpoints/step-NNNNNNNN.pt holds it as a plain dict,
step-NNNNNNNN.pt.sha256 its checksum, and `latest` names the newest file. Each file is
written to a temporary name, fsynced and renamed, so a crash or a full disk leaves the previous
checkpoint intact. Loading uses `torch.load(weights_only=True)`: a file that needs any other
unpickling is refused. A corrupt newest checkpoint is reported and the one before it is used.
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

from hvdlm.config import config_from_dict
from hvdlm.errors import CheckpointError, DataError
from hvdlm.models import build_model

log = logging.getLogger("hvdlm")
NAME = re.compile(r"^step-(\d{8})\.pt$")


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


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(run: str | Path, state: TrainingState, keep: int) -> Path:
    """Write step-NNNNNNNN.pt (+ .sha256, then `latest`), then drop all but the newest `keep`."""
    folder = checkpoint_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{state.step:08d}.pt"
    buffer = io.BytesIO()
    torch.save(state.to_dict(), buffer)
    data = buffer.getvalue()
    sidecar = path.with_name(path.name + ".sha256")
    try:
        _write_atomic(sidecar, hashlib.sha256(data).hexdigest().encode())
        _write_atomic(path, data)
        _write_atomic(folder / "latest", path.name.encode())
        _fsync_dir(folder)
    except OSError as err:
        if not path.exists():
            sidecar.unlink(missing_ok=True)
        raise CheckpointError(f"{path}: could not save checkpoint ({err.strerror or err}); "
                              "the previous checkpoint is intact") from None
    for old in list_checkpoints(run)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    return path


def list_checkpoints(run: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first."""
    folder = checkpoint_dir(run)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if NAME.match(p.name))


def load(path: str | Path) -> TrainingState:
    """Load one checkpoint after checking its checksum; CheckpointError if it is not sound."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror})") from None
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.exists():
        raise CheckpointError(f"{path}: no checksum file {sidecar.name} beside it")
    if sidecar.read_text().strip() != hashlib.sha256(data).hexdigest():
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupted)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: refused, not a plain weights-only checkpoint "
                              f"({first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not an hvdlm checkpoint (not a dict)")
    return TrainingState.from_dict(state, path)


def load_latest(run: str | Path) -> tuple[Path, TrainingState] | None:
    """The newest sound checkpoint of a run, skipping (and reporting) corrupt ones.

    The file `latest` names comes first (a run that went back to an older checkpoint wrote
    it last), then the others, newest first. None if the run has no checkpoint at all;
    CheckpointError if none of them is sound.
    """
    candidates = list(reversed(list_checkpoints(run)))
    pointer = checkpoint_dir(run) / "latest"
    named = pointer.read_text().strip() if pointer.is_file() else ""
    first = [p for p in candidates if p.name == named]
    problems = []
    for path in first + [p for p in candidates if p not in first]:
        try:
            return path, load(path)
        except CheckpointError as err:
            log.warning("skipping checkpoint: %s", err)
            problems.append(str(err))
    if problems:
        raise CheckpointError(f"no usable checkpoint in {checkpoint_dir(run)}: {problems[0]}")
    return None


def load_run_model(run: str | Path) -> tuple[torch.nn.Module, TrainingState]:
    """The model of the run's newest sound checkpoint (CPU, eval mode) and its training state."""
    found = load_latest(run)
    if found is None:
        raise CheckpointError(f"{checkpoint_dir(run)}: no checkpoint to load")
    model = build_model(config_from_dict(found[1].config).model)
    model.load_state_dict(found[1].model)
    return model.eval(), found[1]
