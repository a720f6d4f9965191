"""hvdlm's benchmarks (`python -m benchmarks.NAME`) and studies (`benchmarks.studies`); what
each measures, how to run it and where its report lands: benchmarks/README.md."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository: ranks and subprocesses run here
