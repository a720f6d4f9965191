"""hvdlm.cluster.distributed.init: each local rank gets its share of the cores before Horovod
starts, unless train.pin_cores=false (Horovod itself is stubbed: no world is started)."""
from types import SimpleNamespace

import pytest

from hvdlm.cluster import distributed


@pytest.mark.parametrize("pin", [True, False])
def test_a_rank_is_pinned_unless_the_config_says_no(pin, monkeypatch):
    pinned = []
    monkeypatch.setattr(distributed, "check_launch", lambda: None)
    monkeypatch.setattr(distributed, "launched_size", lambda: 2)
    monkeypatch.setattr(distributed, "horovod_tuning", lambda use_cuda: {})
    monkeypatch.setattr(distributed, "_pin_local_rank", lambda *rank: pinned.append(rank))
    monkeypatch.setattr(distributed, "hvd", SimpleNamespace(
        init=lambda: None, rank=lambda: 1, size=lambda: 2, local_rank=lambda: 1,
        local_size=lambda: 2))
    monkeypatch.setattr(distributed, "_active", False)
    monkeypatch.setenv("HOROVOD_LOCAL_RANK", "1")
    monkeypatch.setenv("HOROVOD_LOCAL_SIZE", "2")
    monkeypatch.setattr(distributed.torch, "set_num_threads", lambda n: None)
    world = distributed.init("cpu", pin_cores=pin)
    assert (world.rank, world.size) == (1, 2)
    assert pinned == ([(1, 2)] if pin else [])
