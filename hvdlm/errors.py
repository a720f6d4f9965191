"""The project's error types and exit codes: user mistakes, reported in one line.

Raise these for anything the user can fix (bad option, missing file, corrupt shard). Bugs stay
ordinary exceptions and keep their traceback. `hvdlm.cli.run` turns them into an exit code.
"""

EXIT_USAGE = 2       # a bad option, config key or value
EXIT_STOPPED = 75    # stopped on request after writing a checkpoint: resume with --resume auto
                     # (slurm/train.sbatch and hvdlm.submit requeue on it; EX_TEMPFAIL)
EXIT_TIMEOUT = 124   # a launcher's whole-job deadline passed (as timeout(1) reports it)
EXIT_INTERRUPTED = 130


class HvdlmError(Exception):
    """A failure the user can act on; exit status 1."""

    exit_code = 1


class UsageError(HvdlmError):
    """A bad option, config key or value; exit status 2."""

    exit_code = EXIT_USAGE


class DataError(HvdlmError):
    """A dataset, shard, manifest or corpus file that is missing or wrong."""


class CheckpointError(HvdlmError):
    """A checkpoint that is missing, corrupt or does not fit the run."""
