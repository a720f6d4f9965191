"""Report and export folders that appear complete or not at all (export, explain, audit).

    refuse_existing(out)              # early, before the expensive work
    with staged(out) as stage:        # fill OUT.partial; it becomes OUT only if all went well
        (stage / "report.json").write_text(...)
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator

from hvdlm.errors import DataError


def refuse_existing(out: Path) -> None:
    """A user's --out may be new or an empty folder, nothing else."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists; choose a new --out")


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """Yield an empty OUT.partial; rename it to OUT on success, remove it on any error."""
    refuse_existing(out)
    stage = out.with_name(out.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
        if out.exists():
            out.rmdir()  # empty, checked above
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
