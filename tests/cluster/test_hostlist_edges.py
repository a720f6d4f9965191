"""hvdlm.cluster.hostlist at its edges, where the mutation run (scripts/mutation.sh hostlist)
found changes no other test noticed: a node list that starts with a bracket, nested brackets,
the exact one-line messages, the last node's id, and the rendezvous secret in a rank's
variables.

    .venv/bin/python -m pytest tests/cluster/test_hostlist_edges.py
"""
from __future__ import annotations

import pytest

from hvdlm.cluster.hostlist import (Slot, check_hosts, expand_nodelist, horovod_env,
                                    task_from_environ)
from hvdlm.errors import UsageError
from tests.cluster.conftest import slurm_env


def test_a_name_may_start_with_its_bracket():
    assert expand_nodelist("[1-2]") == ["1", "2"]
    assert expand_nodelist("[08-10]x") == ["08x", "09x", "10x"]


def test_nested_brackets_are_one_entry_and_refused_as_a_range():
    with pytest.raises(UsageError) as err:
        expand_nodelist("a[[1],2],b")
    assert str(err.value) == "bad node list 'a[[1],2],b': '[1' is not N or N-M"


def test_an_error_in_a_later_group_names_the_whole_list():
    with pytest.raises(UsageError) as err:
        expand_nodelist("n[1]-r[x]")
    assert str(err.value) == "bad node list 'n[1]-r[x]': 'x' is not N or N-M"


@pytest.mark.parametrize("hosts, message", [
    ([], "no hosts given"),
    ([("b", 1), ("a", 1), ("b", 2), ("a", 1)], "host listed twice: a, b (give HOST:SLOTS once)"),
    ([("a", 0), ("b", 1), ("c", 0)], "host with no slots: a, c"),
])
def test_check_hosts_messages(hosts, message):
    with pytest.raises(UsageError) as err:
        check_hosts(hosts)
    assert str(err.value) == message


def test_the_last_node_id_is_inside_and_one_past_it_is_not():
    env = slurm_env(1, 0, 1, "n[1-2]", "1(x2)", 2)
    assert task_from_environ(env).host == "n2"
    with pytest.raises(UsageError, match="SLURM_NODEID 2 is outside the node list"):
        task_from_environ({**env, "SLURM_NODEID": "2"})


def test_no_node_list_and_no_task_messages():
    env = {**slurm_env(0, 0, 0, "", "1", 1), "SLURM_STEP_NODELIST": ""}
    with pytest.raises(UsageError) as err:
        task_from_environ(env)
    assert str(err.value) == "SLURM_STEP_NODELIST and SLURM_JOB_NODELIST are empty"
    with pytest.raises(UsageError) as err:
        task_from_environ({})
    assert str(err.value) == ("no Slurm task found (SLURM_PROCID, SLURM_JOB_NODELIST unset): run "
                              "under srun or submitit, or give --hosts HOST:SLOTS,... to start "
                              "ranks here")


def test_the_secret_reaches_the_rank_only_when_there_is_one():
    slot = Slot(hostname="n1", rank=0, local_rank=0, cross_rank=0, size=1, local_size=1,
                cross_size=1)
    env = horovod_env(slot, "10.0.0.1", 4242, "lo", 30, secret="s3cret")
    assert env["HOROVOD_GLOO_RENDEZVOUS_SECRET"] == "s3cret"
    for secret in (None, ""):
        assert not any("SECRET" in k for k in horovod_env(slot, "10.0.0.1", 4242, "lo", 30,
                                                           secret=secret))
