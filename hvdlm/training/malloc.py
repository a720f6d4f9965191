"""Keep freed memory in the training process instead of handing it back to the kernel.

PyTorch on CPU has no caching allocator: every step's activations come from malloc and go
back to it. glibc returns a free region at the top of its heap to the kernel (trimming) and
serves big requests with fresh mmaps, so the next step page-faults on every 4 KiB it touches
again, which is dear under a hypervisor (docs/scaling/NOTES.md has the counts). Called by
hvdlm.train on CPU; a no-op outside glibc. `train.keep_freed_memory=false` keeps glibc's own
behaviour, and so does any of MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_, GLIBC_TUNABLES.
"""
from __future__ import annotations

import ctypes
import os
from typing import Mapping

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # the largest glibc accepts on 64-bit: bigger blocks still mmap
NEVER_TRIM = 2**31 - 1  # mallopt takes an int: trim only past 2 GiB of free heap top
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory(env: Mapping[str, str] = os.environ) -> bool:
    """Stop trimming the heap and serve blocks up to 32 MiB from it; True if malloc took it.

    The process then keeps its peak heap, which a training loop reuses every step anyway.
    """
    if any(k in env for k in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): its allocator is left as it is
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
                and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
