"""The one reader for files that come from elsewhere: checkpoints and their .sha256, Hugging
Face folders (config.json, model.safetensors), tokenizer.json, --config, explain --file, and
the files of a run folder that someone else may have touched.

    fd = open_regular(path, "checkpoint")            # a descriptor of a regular file, or DataError
    data = read_bytes(path, MiB, "checksum file")    # at most `limit` bytes, checked before reading
    text = read_text(path, 16 * MiB, "--config file")
    value = read_json(path, 16 * MiB, "config.json")

Only regular files are read: a FIFO would block forever, /dev/zero or /dev/urandom would never
end, and a socket or device is no model file. The open never blocks (O_NONBLOCK) and, with
`follow=False` (files hvdlm wrote itself, where a link can only be someone else's), never
follows a link. The size is checked against the limit before any byte is read. Errors are one
line naming the file and what is wrong with it, never quoting its bytes (a link to a file the
user may read but should not show, such as /etc/shadow, must not leak through an error).
"""
from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path
from typing import Any

from hvdlm.errors import DataError

MiB = 1 << 20
KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK:
         "a block device", stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def open_regular(path: str | os.PathLike, what: str = "file", follow: bool = True) -> int:
    """A read-only descriptor of `path` if it is a regular file; DataError naming it if not."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        why = "a symbolic link, not expected here" if err.errno == 40 else err.strerror
        raise DataError(f"{path}: cannot read the {what} ({why})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise DataError(f"{path}: the {what} is {kind}, not a regular file; refused")
    os.set_blocking(fd, True)
    return fd


def size_of(path: str | os.PathLike, limit: int, what: str, fd: int) -> int:
    """The file's size, or DataError if it is over `limit` bytes."""
    size = os.fstat(fd).st_size
    if size > limit:
        os.close(fd)
        raise DataError(f"{path}: the {what} has {size:,} bytes, more than the {limit:,} "
                        "allowed; refused")
    return size


def read_bytes(path: str | os.PathLike, limit: int, what: str = "file",
               follow: bool = True) -> bytes:
    """At most `limit` bytes: the whole regular file `path`, checked before reading."""
    fd = open_regular(path, what, follow)
    size = size_of(path, limit, what, fd)
    try:
        with open(fd, "rb", closefd=True) as f:
            data = f.read(size + 1)
    except OSError as err:
        raise DataError(f"{path}: cannot read the {what} ({err.strerror})") from None
    if len(data) > size:
        raise DataError(f"{path}: the {what} grew while it was read; refused")
    return data


def read_text(path: str | os.PathLike, limit: int, what: str = "file",
              follow: bool = True) -> str:
    """A regular file of at most `limit` bytes as UTF-8 text."""
    data = read_bytes(path, limit, what, follow)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: the {what} is not UTF-8 text (byte {err.start})") from None


def utf8_argument(value: str) -> str:
    """An argparse type for text options: bytes that are not UTF-8 on the command line (which
    Python keeps as lone surrogates) are one usage error, not a traceback in the tokenizer."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise argparse.ArgumentTypeError(f"not valid UTF-8 (character {err.start})") from None
    return value


def read_json(path: str | os.PathLike, limit: int, what: str = "file",
              follow: bool = True) -> Any:
    """A regular file of at most `limit` bytes parsed as JSON (errors say where, not what)."""
    text = read_text(path, limit, what, follow)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: the {what} is not valid JSON ({err.msg} at line "
                        f"{err.lineno} column {err.colno})") from None
    except RecursionError:
        raise DataError(f"{path}: the {what} nests too deeply; refused") from None
