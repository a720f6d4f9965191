"""`python -m hvdlm.submit`: submit a training run with submitit, on Slurm or on this machine.

The command lives with the rest of the cluster side, in hvdlm/cluster/submit.py.
"""
import sys

# main, and the Python API (submit_training, wait_for_ranks) for code that imported it from here
from hvdlm.cluster.submit import main, submit_training, wait_for_ranks  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
