"""The project's error types: user mistakes, reported in one line at the command line.

Raise these for anything the user can fix (bad option, missing file, corrupt shard). Bugs stay
ordinary exceptions and keep their traceback. `hvdlm.cli.run` turns them into an exit code.
"""


class HvdlmError(Exception):
    """A failure the user can act on; exit status 1."""

    exit_code = 1


class UsageError(HvdlmError):
    """A bad option, config key or value; exit status 2."""

    exit_code = 2


class DataError(HvdlmError):
    """A dataset, shard, manifest or corpus file that is missing or wrong."""


class CheckpointError(HvdlmError):
    """A checkpoint that is missing, corrupt or does not fit the run."""
