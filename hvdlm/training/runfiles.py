"""What a run folder holds beside its checkpoints, and how commands find it again.

`RUN/data_dir.txt` names the dataset the run trained on; its tokenizer is the run's tokenizer.
Used by `hvdlm.generate` and `hvdlm.export`.
"""
from __future__ import annotations

from pathlib import Path

from hvdlm.errors import DataError
from hvdlm.text import shards
from hvdlm.text.tokenizer import Tokenizer, load_tokenizer
from hvdlm.training.checkpoint import TrainingState


def run_tokenizer(run: Path, state: TrainingState, override: str | None) -> Tokenizer:
    """The run's tokenizer: `override`, else that of the dataset in RUN/data_dir.txt; it must
    be the one the checkpoint was trained with."""
    data_dir_file = run / "data_dir.txt"
    if override:
        path = Path(override)
    elif data_dir_file.exists():
        path = shards.load_manifest(data_dir_file.read_text().strip()).tokenizer_path
    else:
        raise DataError(f"{run}: cannot find the run's tokenizer; pass --tokenizer FILE")
    tokenizer = load_tokenizer(path)
    state.require_tokenizer(tokenizer.sha256, path)
    return tokenizer
