"""What a folder is, by the file its writer leaves in it: hvdlm.preprocess's dataset has
manifest.json, hvdlm.train's run has env.json or checkpoints/ (docs/formats.md).

    folders.refuse(Path(args.out), "--out", folders.DATASET, "hvdlm.train writes a run")

Each command refuses an --out that is the other kind before it writes anything, so a mix-up is
one line and leaves the folder as it was.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from hvdlm.errors import UsageError


class Kind(NamedTuple):
    name: str                  # what such a folder is, for messages
    markers: tuple[str, ...]   # any one of these names in it says so


DATASET = Kind("dataset folder", ("manifest.json",))
RUN = Kind("run folder", ("env.json", "checkpoints"))


def marker(folder: Path, kind: Kind) -> str | None:
    """The first of `kind`'s markers that `folder` holds (None: not that kind, or no folder)."""
    if not folder.is_dir():
        return None
    return next((m for m in kind.markers if (folder / m).exists()), None)


def refuse(folder: Path, option: str, kind: Kind, purpose: str) -> None:
    """A UsageError when `folder` is of `kind`: `purpose` says what the option wants instead."""
    found = marker(folder, kind)
    if found is not None:
        raise UsageError(f"{option} {folder}: a {kind.name} (it has {found}); {purpose}: "
                         f"give another {option}")
