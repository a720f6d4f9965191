"""`python -m hvdlm.launch`: start Horovod (Gloo) ranks under srun, submitit or on named hosts.

The command lives with the rest of the cluster side, in hvdlm/cluster/launch.py.
"""
import sys

# main, and the Python API (run_on_hosts) for code that imported it from here
from hvdlm.cluster.launch import main, run_on_hosts  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
