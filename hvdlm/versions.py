"""Installed versions, read without importing torch or Horovod (for `hvdlm --version` and
RUN/env.json)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def horovod_build() -> str | None:
    """The key scripts/install_horovod.sh recorded (version, torch, Python, and last the hash
    of the build flags and the patch set); None for a Horovod it did not install."""
    spec = importlib.util.find_spec("horovod")  # finds, does not import
    if spec is None or spec.origin is None:
        return None
    record = Path(spec.origin).with_name("hvdlm_build.txt")
    return record.read_text().strip() if record.is_file() else None
