"""Tests of hvdlm.cluster.hostlist: Slurm node lists and task counts, --hosts, the rank plan
(Horovod's own, through assign_slots), and a task's place from Slurm's or submitit's variables.

    .venv/bin/python -m pytest tests/cluster/test_hostlist.py
"""
from __future__ import annotations

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvdlm.cluster.hostlist import (Slot, assign_slots, check_hosts, expand_nodelist,
                                    expand_tasks_per_node, find_slot, horovod_env, hosts_string,
                                    parse_hosts, task_from_environ)
from hvdlm.errors import UsageError
from tests.cluster.conftest import slurm_env


@pytest.mark.parametrize("nodelist, expected", [
    ("node01", ["node01"]),
    ("node[01-04,07]", ["node01", "node02", "node03", "node04", "node07"]),
    ("a[1-2],b3", ["a1", "a2", "b3"]),
    ("gpu-[001-003]-x", ["gpu-001-x", "gpu-002-x", "gpu-003-x"]),
    ("n[8-10]", ["n8", "n9", "n10"]),
    ("n[08-10]", ["n08", "n09", "n10"]),
    ("r[1-2]-n[1-2]", ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]),
    ("x,y[5],z.example.org", ["x", "y5", "z.example.org"]),
])
def test_expand_nodelist(nodelist, expected):
    assert expand_nodelist(nodelist) == expected


@pytest.mark.parametrize("bad", ["node[01-", "node]1[", "n[3-1]", "n[a-b]", "a,,b", "n[1-2]$"])
def test_expand_nodelist_refuses_malformed(bad):
    with pytest.raises(UsageError):
        expand_nodelist(bad)


@pytest.mark.parametrize("spec, expected", [
    ("1", [1]), ("4", [4]), ("2(x3),1", [2, 2, 2, 1]), ("1,3(x2)", [1, 3, 3]),
])
def test_expand_tasks_per_node(spec, expected):
    assert expand_tasks_per_node(spec) == expected


def test_parse_hosts_and_refusals():
    assert parse_hosts("node01:2,node02:1,node03") == [("node01", 2), ("node02", 1), ("node03", 1)]
    for bad in ("a:1,a:2", "a:0", "a:x", "", "a b:1"):
        with pytest.raises(UsageError):
            parse_hosts(bad)


def test_plan_uneven_hosts():
    slots = assign_slots([("a", 2), ("b", 2), ("c", 2), ("d", 1)])
    assert [s.rank for s in slots] == list(range(7))
    assert [(s.hostname, s.local_rank, s.local_size) for s in slots[5:]] == [("c", 1, 2), ("d", 0, 1)]
    # Local rank 0 exists on all 4 hosts, local rank 1 only on the first 3.
    assert [(s.cross_rank, s.cross_size) for s in slots if s.local_rank == 0] == [(i, 4) for i in range(4)]
    assert [(s.cross_rank, s.cross_size) for s in slots if s.local_rank == 1] == [(i, 3) for i in range(3)]


@pytest.mark.horovod
@pytest.mark.parametrize("hosts", [[("a", 1)], [("a", 2), ("b", 1), ("c", 3)],
                                   [(f"n{i}", 1 + i % 3) for i in range(6)]])
def test_plan_matches_horovods_own(hosts):
    util = pytest.importorskip("horovod.runner.common.util.hosts")
    theirs = util.get_host_assignments(util.parse_hosts(",".join(f"{h}:{n}" for h, n in hosts)),
                                       sum(n for _, n in hosts))
    assert [Slot(**vars(s)) for s in theirs] == assign_slots(hosts)


def place(env):
    task = task_from_environ(env)
    slot = find_slot(assign_slots(task.hosts), task.host, task.local_rank)
    return task, slot


def test_slurm_one_node():
    task, slot = place(slurm_env(1, 1, 0, "cn7", "2", 2))
    assert (task.rank, task.host, task.hosts, task.job_key) == (1, "cn7", [("cn7", 2)], "4242.0.0")
    env = horovod_env(slot, "127.0.0.1", 5000, "lo", 30)
    assert {k: env[k] for k in ("HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK",
                                "HOROVOD_LOCAL_SIZE", "HOROVOD_CROSS_RANK", "HOROVOD_CROSS_SIZE",
                                "HOROVOD_HOSTNAME", "HOROVOD_CONTROLLER",
                                "HOROVOD_CPU_OPERATIONS")} == {
        "HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1",
        "HOROVOD_LOCAL_SIZE": "2", "HOROVOD_CROSS_RANK": "0", "HOROVOD_CROSS_SIZE": "1",
        "HOROVOD_HOSTNAME": "cn7", "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo"}


def test_slurm_several_nodes_uneven():
    # 7 tasks on node[01-03,07]: 2,2,2,1 (SLURM_TASKS_PER_NODE=2(x3),1), block distribution.
    layout = [(0, "node01", 0), (1, "node01", 1), (2, "node02", 0), (3, "node02", 1),
              (4, "node03", 0), (5, "node03", 1), (6, "node07", 0)]
    nodes = ["node01", "node02", "node03", "node07"]
    for procid, node, localid in layout:
        env = slurm_env(procid, localid, nodes.index(node), "node[01-03,07]", "2(x3),1", 7)
        task, slot = place(env)
        assert (task.host, slot.rank, slot.local_rank, slot.size) == (node, procid, localid, 7)
        assert slot.local_size == (1 if node == "node07" else 2)
        assert (slot.cross_rank, slot.cross_size) == ((nodes.index(node), 4) if localid == 0
                                                      else (nodes.index(node), 3))
        assert horovod_env(slot, "10.0.0.1", 1, "eth0", 30)["HOROVOD_HOSTNAME"] == node


def test_slurm_step_variables_win_and_restart_count_keys_the_file():
    env = slurm_env(0, 0, 5, "node[01-08]", "1(x8)", 8, SLURM_STEP_NODELIST="node[03-04]",
                    SLURM_STEP_TASKS_PER_NODE="1(x2)", SLURM_STEP_NUM_TASKS="2",
                    SLURMD_NODENAME="node03", SLURM_RESTART_COUNT="2", SLURM_STEP_ID="3")
    task = task_from_environ(env)
    assert (task.host, task.hosts, task.job_key) == ("node03", [("node03", 1), ("node04", 1)],
                                                     "4242.3.2")


def test_slurm_inconsistent_counts_is_one_clear_error():
    with pytest.raises(UsageError, match="add up to 6, not 5"):
        task_from_environ(slurm_env(0, 0, 0, "n[1-3]", "2(x3)", 5))
    with pytest.raises(UsageError, match="3 nodes but 2 task counts"):
        task_from_environ(slurm_env(0, 0, 0, "n[1-3]", "2,1", 3))


def test_submitit_local_environment():
    env = {"SUBMITIT_LOCAL_GLOBALID": "2", "SUBMITIT_LOCAL_LOCALID": "2",
           "SUBMITIT_LOCAL_NTASKS": "3", "SUBMITIT_LOCAL_NODEID": "0",
           "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_JOB_ID": "999"}
    task, slot = place(env)
    assert (slot.rank, slot.size, slot.local_rank, slot.local_size) == (2, 3, 2, 3)
    assert task.job_key == "local-999"


# -- more node lists, task counts and refusals ----------------------------------------------------

@pytest.mark.parametrize("nodelist, expected", [
    ("n[01-03]", ["n01", "n02", "n03"]),
    ("n[1,3-4,7]", ["n1", "n3", "n4", "n7"]),
    ("a[1-2,5],b[01-02],c", ["a1", "a2", "a5", "b01", "b02", "c"]),
    ("r[1,3]-n[09-10]", ["r1-n09", "r1-n10", "r3-n09", "r3-n10"]),
    ("  n[1-2]  ", ["n1", "n2"]),
    ("n[007-009]", ["n007", "n008", "n009"]),
    ("host_a.b-c", ["host_a.b-c"]),
])
def test_expand_nodelist_mixed_and_nested_commas(nodelist, expected):
    assert expand_nodelist(nodelist) == expected


@pytest.mark.parametrize("bad, message", [
    ("n[1-2", "unmatched '['"),
    ("n1-2]", "unmatched ']'"),
    ("n[5-3]", "range '5-3' runs backwards"),
    ("n[1-x]", "'1-x' is not N or N-M"),
    ("n[]", "'' is not N or N-M"),
    ("a,,b", "empty entry"),
    ("a,", "empty entry"),
    ("n[1-2]/x", "'n1/x' is not a host name"),
])
def test_expand_nodelist_names_the_problem(bad, message):
    with pytest.raises(UsageError, match="bad node list") as err:
        expand_nodelist(bad)
    assert message in str(err.value) and repr(bad) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", ["", "x", "2(x)", "2(3)", "2(x3", "-1", "2,,1", "1.5"])
def test_expand_tasks_per_node_refuses_malformed(bad):
    with pytest.raises(UsageError, match="bad tasks-per-node value .* is not N or N\\(xK\\)"):
        expand_tasks_per_node(bad)


def test_hosts_string_round_trips_parse_hosts():
    hosts = [("node01", 2), ("node02", 1), ("x.example.org", 4)]
    assert hosts_string(hosts) == "node01:2,node02:1,x.example.org:4"
    assert parse_hosts(hosts_string(hosts)) == hosts


@pytest.mark.parametrize("bad, message", [
    ("a:1,a:2", "host listed twice: a"), ("a:0", "host with no slots: a"),
    ("a:x", "bad --hosts entry 'a:x'"), ("a:-1", "bad --hosts entry 'a:-1'"),
    ("a b:1", "bad --hosts entry 'a b:1'"), ("a:1,", "bad --hosts entry ''"),
])
def test_parse_hosts_messages(bad, message):
    with pytest.raises(UsageError, match=message):
        parse_hosts(bad)


def test_check_hosts_refuses_an_empty_plan():
    with pytest.raises(UsageError, match="no hosts given"):
        check_hosts([])
    with pytest.raises(UsageError, match="no hosts given"):
        assign_slots([])


def test_assign_slots_one_host_and_block_order():
    slots = assign_slots(parse_hosts("solo:3"))
    assert [(s.rank, s.local_rank, s.cross_rank, s.cross_size, s.local_size) for s in slots] == \
        [(0, 0, 0, 1, 3), (1, 1, 0, 1, 3), (2, 2, 0, 1, 3)]
    slots = assign_slots([("a", 1), ("b", 3)])  # a short first host: local rank 1 starts on b
    assert [(s.hostname, s.rank, s.local_rank) for s in slots] == \
        [("a", 0, 0), ("b", 1, 0), ("b", 2, 1), ("b", 3, 2)]
    assert [(s.cross_rank, s.cross_size) for s in slots] == [(0, 2), (1, 2), (0, 1), (0, 1)]
    assert {s.size for s in slots} == {4}


def test_find_slot_and_its_refusal():
    slots = assign_slots([("a", 2), ("b", 1)])
    assert find_slot(slots, "b", 0).rank == 2 and find_slot(slots, "a", 1).rank == 1
    with pytest.raises(UsageError, match="no slot for local rank 1 on host 'b'"):
        find_slot(slots, "b", 1)
    with pytest.raises(UsageError, match="no slot for local rank 0 on host 'c'"):
        find_slot(slots, "c", 0)


@pytest.mark.horovod
def test_horovod_env_is_what_horovodrun_gives_a_gloo_rank():
    """Every variable horovodrun's Gloo mode sets for a rank, with Horovod's own values for the
    same hosts; beyond them only the Gloo timeout. (NCCL_SOCKET_IFNAME, which it also sets,
    is NCCL's: left to NCCL or the user.)"""
    gloo_run = pytest.importorskip("horovod.runner.gloo_run")
    util = pytest.importorskip("horovod.runner.common.util.hosts")
    theirs = util.get_host_assignments(util.parse_hosts("a:2,b:1"), 3)
    for ours, slot in zip(assign_slots([("a", 2), ("b", 1)]), theirs, strict=True):
        want = {**gloo_run.create_slot_env_vars(slot),
                **gloo_run.create_run_env_vars("10.1.2.3", ["eth1"], 4321)}
        want = {k: str(v) for k, v in want.items() if k != "NCCL_SOCKET_IFNAME"}
        env = horovod_env(ours, "10.1.2.3", 4321, "eth1", 45)
        assert env == {**want, "HOROVOD_GLOO_TIMEOUT_SECONDS": "45"}


# -- a task's place from the environment ----------------------------------------------------------

def test_slurm_nodename_wins_over_nodeid_and_stepid_fallback():
    env = slurm_env(3, 1, 0, "n[1-2]", "2(x2)", 4, SLURMD_NODENAME="n2")
    del env["SLURM_STEP_ID"]
    env["SLURM_STEPID"] = "7"
    task = task_from_environ(env)
    assert (task.rank, task.local_rank, task.host, task.job_key) == (3, 1, "n2", "4242.7.0")
    slot = find_slot(assign_slots(task.hosts), task.host, task.local_rank)
    assert (slot.rank, slot.cross_rank) == (3, 1)


def test_slurm_without_tasks_per_node_means_one_task_per_node():
    env = slurm_env(1, 0, 1, "n[1-3]", "", 3)
    del env["SLURM_TASKS_PER_NODE"]
    task = task_from_environ(env)
    assert task.hosts == [("n1", 1), ("n2", 1), ("n3", 1)] and task.host == "n2"


def test_slurm_job_nodelist_alone_and_default_key():
    env = {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
           "SLURM_JOB_NODELIST": "cn1", "SLURM_NTASKS": "1"}
    task = task_from_environ(env)
    assert (task.host, task.hosts, task.job_key) == ("cn1", [("cn1", 1)], "job.0.0")


@pytest.mark.parametrize("change, message", [
    ({"SLURM_PROCID": "one"}, "SLURM_PROCID is missing or not a number ('one')"),
    ({"SLURM_LOCALID": None}, "SLURM_LOCALID is missing or not a number (None)"),
    ({"SLURM_NTASKS": None}, "SLURM_NTASKS is missing or not a number"),
    ({"SLURM_NODEID": "5"}, "SLURM_NODEID 5 is outside the node list"),
    ({"SLURM_NODEID": "x"}, "SLURM_NODEID is missing or not a number ('x')"),
    ({"SLURM_JOB_NODELIST": "n[2-1]"}, "runs backwards"),
    ({"SLURM_TASKS_PER_NODE": "2(x2"}, "bad tasks-per-node value"),
])
def test_slurm_bad_variables_are_one_clear_error(change, message):
    env = slurm_env(0, 0, 0, "n[1-2]", "1(x2)", 2)
    for key, value in change.items():
        if value is None:
            del env[key]
        else:
            env[key] = value
    with pytest.raises(UsageError) as err:
        task_from_environ(env)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_submitit_local_wins_over_an_outer_slurm_allocation():
    env = {**slurm_env(5, 1, 2, "n[1-3]", "2(x3)", 6), "SUBMITIT_LOCAL_GLOBALID": "1",
           "SUBMITIT_LOCAL_LOCALID": "1", "SUBMITIT_LOCAL_NTASKS": "2"}
    task = task_from_environ(env)
    assert (task.rank, task.local_rank, task.hosts) == (1, 1, [(socket.gethostname(), 2)])
    assert task.job_key == "local-job"


def test_submitit_local_missing_count_is_one_clear_error():
    with pytest.raises(UsageError, match="SUBMITIT_LOCAL_NTASKS is missing or not a number"):
        task_from_environ({"SUBMITIT_LOCAL_GLOBALID": "0", "SUBMITIT_LOCAL_LOCALID": "0"})


@pytest.mark.parametrize("env", [{}, {"SLURM_PROCID": "0"}, {"SLURM_JOB_NODELIST": "n1"},
                                 {"SUBMITIT_LOCAL_LOCALID": "0"}])
def test_no_task_environment_says_what_to_do(env):
    with pytest.raises(UsageError, match="no Slurm task found .* give --hosts HOST:SLOTS"):
        task_from_environ(env)


@settings(max_examples=60, deadline=None)
@given(groups=st.lists(st.tuples(st.sampled_from(["n", "gpu-", "rack1-c"]),
                                 st.lists(st.tuples(st.integers(0, 120), st.integers(0, 5)),
                                          min_size=1, max_size=4),
                                 st.integers(0, 3)),
                       min_size=1, max_size=4))
def test_expand_nodelist_matches_a_naive_expansion(groups):
    """Any `prefix[a-b,c,...]` groups joined by commas, zero padding included."""
    text, expected = [], []
    for prefix, ranges, width in groups:
        parts = []
        for lo, extra in ranges:
            hi = lo + extra
            parts.append(f"{lo:0{width}d}" + (f"-{hi:0{width}d}" if extra else ""))
            pad = width if width and len(f"{lo:0{width}d}") > len(str(lo)) else 0
            expected += [prefix + str(n).zfill(pad) for n in range(lo, hi + 1)]
        text.append(f"{prefix}[{','.join(parts)}]")
    assert expand_nodelist(",".join(text)) == expected


def test_empty_node_lists_are_one_line():
    with pytest.raises(UsageError, match="SLURM_STEP_NODELIST and SLURM_JOB_NODELIST are empty"):
        task_from_environ({"SLURM_PROCID": "0", "SLURM_STEP_NODELIST": "", "SLURM_NTASKS": "1",
                           "SLURM_LOCALID": "0", "SLURM_NODEID": "0"})
