"""python -m hvdlm.eval_harness --model hvdlm --model_args run=RUN --tasks ... (the harness's
arguments; hvdlm/eval_harness/__init__.py)."""
import sys

from hvdlm import cli
from hvdlm.eval_harness import main

if __name__ == "__main__":
    sys.exit(cli.run(lambda argv: main(), None, "hvdlm.eval_harness"))
