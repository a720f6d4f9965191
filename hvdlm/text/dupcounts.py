"""How often each kept document occurred before `--dedup` dropped its copies.

`python -m hvdlm.preprocess ... --dedup` writes DATA/dedup_counts.npy: one row per kept corpus
document, in the order the merge writes them, (split, count) with split 0 = train, 1 = val
(canary documents are not in it). The merge already has every document's fingerprint, so this
costs one `np.unique`. `python -m hvdlm.audit` splits its extraction rates by these counts
(memorisation grows with repetition: Kandpal et al. 2022); without --dedup the dataset holds
the copies themselves and the audit counts them there.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hvdlm.errors import DataError
from hvdlm.text.corpus import DIGEST_BYTES

FILE = "dedup_counts.npy"
SPLITS = ("train", "val")


def write(folder: Path, digests: np.ndarray, keep: np.ndarray, val: np.ndarray) -> None:
    """`digests` [n, 16] of all documents before dedup; `keep`, `val` the merge's masks."""
    _, inverse, counts = np.unique(digests.view(f"V{DIGEST_BYTES}").ravel(),
                                   return_inverse=True, return_counts=True)
    per_doc = counts[inverse.ravel()]
    rows = np.stack([val[keep].astype(np.int64), per_doc[keep].astype(np.int64)], axis=1)
    np.save(folder / FILE, rows)  # .npy, not .npz: no zip timestamps, the same bytes each run


def read(data_dir: str | Path) -> dict[str, np.ndarray] | None:
    """Per split, the pre-dedup count of each corpus document in split order; None if absent."""
    path = Path(data_dir) / FILE
    if not path.exists():
        return None
    try:
        rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if rows.ndim != 2 or rows.shape[1] != 2:
        raise DataError(f"{path}: not a dedup count table (shape {rows.shape})")
    return {name: rows[rows[:, 0] == i, 1] for i, name in enumerate(SPLITS)}
