"""The commands of hvdlm, listed once: name -> the module with its `main`, and what it does.

Everything that names the commands is made from this list: the console scripts `hvdlm-NAME`
(setup.py), the dispatcher `hvdlm NAME ...` (hvdlm/__main__.py), the import rules
(tests/import_rules.py) and the README's list (`markdown()`, checked by tests/test_commands.py).
Standard library only, importing nothing of hvdlm: setup.py reads it before hvdlm is installed.
"""
from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    module: str   # has main(argv=None) -> exit status
    summary: str  # one line, for `hvdlm --help` and the README


COMMANDS = {
    "preprocess": Command("hvdlm.preprocess", "text files -> tokenizer + sharded HDF5 dataset"),
    "verify": Command("hvdlm.verify", "check a dataset's shards against its manifest"),
    "train": Command("hvdlm.train", "train a model (under horovodrun, srun or hvdlm.launch)"),
    "evaluate": Command("hvdlm.evaluate", "perplexity, token accuracy and bits per byte of a run"),
    "generate": Command("hvdlm.generate", "continue a prompt with a run's model"),
    "export": Command("hvdlm.export", "a GPT or Llama run as a Hugging Face folder"),
    "explain": Command("hvdlm.explain.command",
                       "an interpretability report of a run's model (one HTML page)"),
    "audit": Command("hvdlm.audit.command",
                     "what a run's model memorised: canaries, extraction, PII in samples"),
    "launch": Command("hvdlm.launch", "start one rank per Slurm task or per --hosts slot"),
    "submit": Command("hvdlm.submit", "submit a training run with submitit"),
}
DISPATCHER = "hvdlm.__main__"  # `hvdlm` itself


def runnable(name: str) -> str:
    """What `python -m` runs for a command: a package's __main__.py runs its command.py."""
    return COMMANDS[name].module.removesuffix(".command")


def console_scripts() -> list[str]:
    """setup.py's entry points: `hvdlm` and an `hvdlm-NAME` script for each command."""
    return [f"hvdlm={DISPATCHER}:main",
            *(f"hvdlm-{name}={c.module}:main" for name, c in COMMANDS.items())]


def listing(indent: str = "") -> str:
    """A line a command, `NAME  what it does`, aligned: as `hvdlm --help` shows them."""
    width = max(map(len, COMMANDS))
    return "\n".join(f"{indent}{name:<{width}}  {c.summary}" for name, c in COMMANDS.items())


def markdown() -> str:
    """The README's list (between its `<!-- commands:start -->` and `<!-- commands:end -->`)."""
    return f"```\n{listing()}\n```\n"
