"""Evaluate a run's latest checkpoint: loss, perplexity, bits per byte, token accuracy.

    python -m hvdlm.evaluate --run RUN --data DATA [--split val]
    {"loss": 3.91, "perplexity": 49.9, "bits_per_byte": 1.52, "accuracy": 0.31, "tokens": 81920}
    python -m hvdlm.evaluate --baseline unigram --data DATA --seq-len 128   (no model needed)

Every window of the split is scored (any dataset made with the run's tokenizer). Loss is in
nats per predicted token; bits per byte divides the summed loss by ln 2 and by the exact UTF-8
byte length of the predicted tokens, so it compares across tokenizers
(hvdlm/training/scoring.py, which the periodic evaluation of training shares).
"""
from __future__ import annotations

import json
import sys
from typing import Sequence

import torch

from hvdlm import cli
from hvdlm.config import config_from_dict
from hvdlm.models.unigram import UnigramLM
from hvdlm.text import shards
from hvdlm.training import data
from hvdlm.training.checkpoint import load_run_model
from hvdlm.training.scoring import byte_lengths, score_windows


def _main(argv: Sequence[str] | None) -> int:
    parser = cli.ArgumentParser(prog="hvdlm.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="run folder with checkpoints/")
    parser.add_argument("--baseline", choices=["unigram"],
                        help="score a baseline fitted on the train split instead of a run")
    parser.add_argument("--seq-len", type=int, default=128,
                        help="window length for --baseline (use the run's model.seq_len)")
    parser.add_argument("--data", required=True, help="dataset folder with manifest.json")
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.seq_len < 1:
        parser.error("--batch-size and --seq-len must be >= 1")
    if (args.run is None) == (args.baseline is None):
        parser.error("give exactly one of --run and --baseline")

    manifest = data.open_dataset(args.data)
    tokenizer = manifest.open_tokenizer()
    if args.baseline:
        train = (shards.open_tokens(manifest.shard_path(s)) for s in manifest.splits["train"])
        model, seq_len = UnigramLM.fit(train, manifest.vocab_size), args.seq_len
    else:
        model, state = load_run_model(args.run)
        seq_len = config_from_dict(state.config).model.seq_len
        state.require_tokenizer(tokenizer.sha256, manifest.tokenizer_path)
    windows = data.TokenWindows(manifest, args.split, seq_len)
    batches = data.loader(windows, data.EvalBatches(len(windows), args.batch_size, 0, 1), 0)
    result = score_windows(model, batches, byte_lengths(tokenizer), torch.device("cpu"))
    print(json.dumps(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv, prog="hvdlm.evaluate")


if __name__ == "__main__":
    sys.exit(main())
