"""The safetensors file format, read and written with torch alone (no pickle, no extra package).

A file is an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the raw bytes. Files may come from anyone (`train.init_from`), so
the reader bounds the header, checks every range against the file and refuses what it does
not know.
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import torch

from hvdlm.errors import DataError

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}
NAMES = {dtype: name for name, dtype in DTYPES.items()}
MAX_HEADER = 100 << 20


def save(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
         metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (no two may share memory) to `path`."""
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        blob = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for blob in blobs:
            f.write(blob)


def load(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; DataError naming the file if it is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from None
    try:
        return _parse(data)
    except (ValueError, KeyError, TypeError, struct.error) as err:
        raise DataError(f"{path}: not a valid safetensors file ({err})") from None


def _parse(data: bytes) -> dict[str, torch.Tensor]:
    (n,) = struct.unpack_from("<Q", data)
    if not 2 <= n <= min(MAX_HEADER, len(data) - 8):
        raise ValueError(f"header length {n}")
    header = json.loads(data[8:8 + n])
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape = DTYPES[info["dtype"]], [int(s) for s in info["shape"]]
        begin, end = (int(x) for x in info["data_offsets"])
        size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= len(body) or end - begin != size:
            raise ValueError(f"{name}: byte range {begin}..{end} does not fit shape {shape}")
        if size == 0:  # frombuffer refuses an empty buffer
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        raw = torch.frombuffer(bytearray(body[begin:end]), dtype=torch.uint8)
        out[name] = raw.view(dtype).reshape(shape)
    return out
