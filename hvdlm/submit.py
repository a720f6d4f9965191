"""`python -m hvdlm.submit`: submit a training run with submitit, on Slurm or on this machine.

The command lives with the rest of the cluster side, in hvdlm/cluster/submit.py.
"""
import sys

from hvdlm.cluster.submit import main, submit_training, wait_for_ranks

# main, and the Python API for code that imports it from here
__all__ = ["main", "submit_training", "wait_for_ranks"]

if __name__ == "__main__":
    sys.exit(main())
