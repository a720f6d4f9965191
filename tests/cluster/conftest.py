"""Helpers shared by the cluster tests: the variables srun gives a task."""
from __future__ import annotations


def slurm_env(procid, localid, nodeid, nodelist, tasks_per_node, ntasks, **extra):
    return {"SLURM_PROCID": str(procid), "SLURM_LOCALID": str(localid),
            "SLURM_NODEID": str(nodeid), "SLURM_JOB_NODELIST": nodelist,
            "SLURM_TASKS_PER_NODE": tasks_per_node, "SLURM_NTASKS": str(ntasks),
            "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", **extra}
