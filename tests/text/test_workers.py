"""hvdlm.text.workers: a worker killed mid-job is a one-line error, not a hang or a traceback."""
from __future__ import annotations

import os
import signal

import pytest

from hvdlm.errors import DataError
from hvdlm.text import workers


def _killed_by_the_kernel(batch: list[str]) -> list[str]:
    if batch == ["die"]:
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    return batch


def test_a_killed_worker_is_a_data_error():
    with workers.Pool(2, None) as pool:
        assert list(pool.map(_killed_by_the_kernel, [["a"], ["b"]])) == [["a"], ["b"]]
        with pytest.raises(DataError, match="worker was killed .* --max-document-bytes"):
            list(pool.map(_killed_by_the_kernel, [["a"], ["die"], ["b"]]))
