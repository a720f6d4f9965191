"""Sample a continuation from a run's latest checkpoint.

    python -m hvdlm.generate --run RUN --prompt "def main(" [--max-new-tokens 200]
        [--temperature 0.8] [--top-k 50] [--seed 0]

Prints the prompt and its continuation (hvdlm/models/sampling.py), which stops at end-of-text.
The tokenizer is the run's (`--tokenizer FILE` when the run's dataset has moved).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch

from hvdlm import cli
from hvdlm.models.sampling import sample
from hvdlm.training.checkpoint import load_run_model
from hvdlm.training.runfiles import run_tokenizer


def _main(argv: Sequence[str] | None) -> int:
    parser = cli.ArgumentParser(prog="hvdlm.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run folder with checkpoints/")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=50, help="0 = no top-k filter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", help="tokenizer.json (default: the run's dataset's)")
    args = parser.parse_args(argv)
    if args.max_new_tokens < 0 or args.temperature < 0 or args.top_k < 0:
        parser.error("--max-new-tokens, --temperature and --top-k must be >= 0")

    run = Path(args.run)
    model, state = load_run_model(run)
    tokenizer = run_tokenizer(run, state, args.tokenizer)
    ids = tokenizer.encode(args.prompt) or [tokenizer.eos_id]
    generator = torch.Generator().manual_seed(args.seed)
    new = sample(model, ids, args.max_new_tokens, state.config["model"]["seq_len"],
                 args.temperature, args.top_k, tokenizer.eos_id, generator)
    print(args.prompt + tokenizer.decode(new))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv, prog="hvdlm.generate")


if __name__ == "__main__":
    sys.exit(main())
