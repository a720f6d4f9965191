"""`python -m hvdlm.launch`: start Horovod (Gloo) ranks under srun, submitit or on named hosts.

The command lives with the rest of the cluster side, in hvdlm/cluster/launch.py.
"""
import sys

from hvdlm.cluster.launch import main, run_on_hosts

# main, and the Python API for code that imports it from here
__all__ = ["main", "run_on_hosts"]

if __name__ == "__main__":
    sys.exit(main())
