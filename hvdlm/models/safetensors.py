"""Safetensors files, read and written through the `safetensors` package (Hugging Face's: its
header is parsed by a bounded Rust reader that checks every dtype, shape and byte range, with
overflow-checked sizes, and the tensors are memory-mapped, not read into a second copy).

    tensors = safetensors.load(folder / "model.safetensors")   # DataError naming a bad file
    safetensors.save(stage / "model.safetensors", tensors, {"format": "pt"})

Files may come from anyone (`train.init_from`), so `load` first opens the path as a regular
file (hvdlm/untrusted.py: no FIFO, device or socket) and reads that very file through
/proc/self/fd, and its errors name the file and the package's reason, never the file's bytes.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from hvdlm import untrusted
from hvdlm.errors import DataError


def save(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
         metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (no two may share memory) to `path`."""
    plain = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    save_file(plain, str(path), metadata=metadata or {"format": "pt"})


def load(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; DataError naming the file if it is not one."""
    path = Path(path)
    fd = untrusted.open_regular(path, "safetensors file")
    try:
        with safe_open(f"/proc/self/fd/{fd}", framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise DataError(f"{path}: not a valid safetensors file ({reason})") from None
    finally:
        os.close(fd)
