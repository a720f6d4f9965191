"""What a run folder holds beside its checkpoints, and how commands find it again.

    RUN/config.toml      the resolved config of the newest start
    RUN/env.json         one entry per (re)start: versions, commit, hosts, Slurm job and restart,
                         and that start's resolved config
    RUN/tokenizer.json   a copy of the dataset's tokenizer, so the run stands on its own
    RUN/data_dir.txt     the dataset it trained on

Written by rank 0 at each start (`record_start`); the commands that read a run find its
tokenizer here through hvdlm/training/run.py's `Run`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hvdlm import untrusted
from hvdlm.errors import DataError
from hvdlm.text import shards
from hvdlm.text.tokenizer import MAX_TOKENIZER_BYTES, Tokenizer, load_tokenizer
from hvdlm.output import write_atomic
from hvdlm.training.checkpoint import TrainingState

ENV = "env.json"
TOKENIZER = "tokenizer.json"


def read_starts(run: str | Path) -> list[dict[str, Any]]:
    """RUN/env.json's entries, oldest first (none for a run that never started)."""
    path = Path(run) / ENV
    if not path.exists() and not path.is_symlink():
        return []
    return untrusted.read_json(path, 256 * untrusted.MiB, "run record", follow=False)


def record_start(run: Path, environment: dict[str, Any], config: dict[str, Any], toml: str,
                 data_dir: str | Path, tokenizer_file: Path) -> None:
    """Append this start to env.json, and write config.toml, data_dir.txt and the tokenizer."""
    starts = read_starts(run) + [{**environment, "config": config}]
    write_atomic(run / ENV, (json.dumps(starts, indent=1) + "\n").encode(), private=True)
    write_atomic(run / "config.toml", toml.encode(), private=True)
    write_atomic(run / "data_dir.txt", (str(Path(data_dir).resolve()) + "\n").encode(),
                 private=True)
    tokenizer = untrusted.read_bytes(tokenizer_file, MAX_TOKENIZER_BYTES, "tokenizer")
    copy = run / TOKENIZER
    if not copy.exists() or copy.is_symlink() or untrusted.read_bytes(
            copy, MAX_TOKENIZER_BYTES, "tokenizer", follow=False) != tokenizer:
        write_atomic(copy, tokenizer, private=True)


def run_tokenizer(run: Path, state: TrainingState, override: str | None) -> Tokenizer:
    """The run's tokenizer: `override`, else RUN/tokenizer.json, else that of the dataset in
    RUN/data_dir.txt (runs from before the copy); it must be the one the checkpoint used."""
    data_dir_file = run / "data_dir.txt"
    if override:
        path = Path(override)
    elif (run / TOKENIZER).exists():
        path = run / TOKENIZER
    elif data_dir_file.exists():
        data_dir = untrusted.read_text(data_dir_file, 64 << 10, "run record", follow=False)
        path = shards.load_manifest(data_dir.strip()).tokenizer_path
    else:
        raise DataError(f"{run}: cannot find the run's tokenizer; pass --tokenizer FILE")
    tokenizer = load_tokenizer(path)
    state.require_tokenizer(tokenizer.sha256, path)
    return tokenizer
