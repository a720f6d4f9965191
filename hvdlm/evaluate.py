"""Evaluate a run's checkpoint: loss, perplexity, bits per byte, token accuracy.

    python -m hvdlm.evaluate --run RUN --data DATA [--split val] [--checkpoint PATH]
        [--device auto|cpu|cuda] [--json]
    scored         RUN/checkpoints/step-00000200.pt (step 200) on the val split of DATA
    loss           3.9100 nats/token
    perplexity     49.90
    bits per byte  1.5200
    accuracy       0.3100
    tokens         81,920
    python -m hvdlm.evaluate --baseline unigram --data DATA --seq-len 128   (no model needed)

--json prints the same numbers, unrounded, as one JSON line for programs:
    {"loss": 3.91, "perplexity": 49.9, "bits_per_byte": 1.52, "accuracy": 0.31, "tokens": 81920,
     "checkpoint": "RUN/checkpoints/step-00000200.pt", "step": 200}

The checkpoint is --checkpoint or the run's newest sound one (hvdlm/training/run.py); the
output names the one scored. On CUDA the forward pass runs under bf16 autocast, the loss in
fp32; the default device is the CPU.

Every window of the split is scored (any dataset made with the run's tokenizer). Loss is in
nats per predicted token; bits per byte divides the summed loss by ln 2 and by the exact UTF-8
byte length of the predicted tokens, so it compares across tokenizers
(hvdlm/training/scoring.py, which the periodic evaluation of training shares).
"""
from __future__ import annotations

import json
import math
import sys
from typing import Sequence

from hvdlm import cli
from hvdlm.errors import DataError
from hvdlm.models.unigram import UnigramLM
from hvdlm.text import shards
from hvdlm.training import data
from hvdlm.training.run import Run
from hvdlm.training.scoring import byte_lengths, score_windows


def _main(argv: Sequence[str] | None) -> int:
    parser = cli.ArgumentParser(prog="hvdlm.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="run folder with checkpoints/")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="score this checkpoint file of the run (default: its newest)")
    parser.add_argument("--baseline", choices=["unigram"],
                        help="score a baseline fitted on the train split instead of a run")
    parser.add_argument("--seq-len", type=int, default=128,
                        help="window length for --baseline (use the run's model.seq_len)")
    parser.add_argument("--data", required=True, help="dataset folder with manifest.json")
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    cli.add_device_option(parser, default="cpu")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON line (for programs) instead of the table")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.seq_len < 1:
        parser.error("--batch-size and --seq-len must be >= 1")
    if (args.run is None) == (args.baseline is None):
        parser.error("give exactly one of --run and --baseline")
    if args.checkpoint and not args.run:
        parser.error("--checkpoint goes with --run")
    device = cli.pick_device(args.device)

    manifest = data.open_dataset(args.data)
    tokenizer = manifest.open_tokenizer()
    scored = {}
    if args.baseline:
        train = (shards.open_tokens(manifest.shard_path(s)) for s in manifest.splits["train"])
        model, seq_len = UnigramLM.fit(train, manifest.vocab_size).to(device), args.seq_len
    else:
        run = Run.open(args.run, args.checkpoint, device, tokenizer)  # the dataset's tokenizer
        model, seq_len = run.model, run.config.model.seq_len
        scored = {"checkpoint": str(run.checkpoint), "step": run.step}
    windows = data.TokenWindows(manifest, args.split, seq_len)
    batches = data.loader(windows, data.EvalBatches(len(windows), args.batch_size, 0, 1), 0)
    result = score_windows(model, batches, byte_lengths(tokenizer), device,
                           autocast=device.type == "cuda")
    bad = [k for k, v in result.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:  # JSON has no NaN or inf: refuse rather than print what a JSON reader rejects
        raise DataError(f"{args.run or 'the baseline'}: {', '.join(bad)} not finite "
                        f"({result[bad[0]]}); the model's outputs overflow")
    if args.json:
        print(json.dumps({**result, **scored}, allow_nan=False))
    else:
        what = f"{scored['checkpoint']} (step {scored['step']})" if scored \
            else "unigram baseline (fitted on the train split)"
        print(table(result, f"{what} on the {args.split} split of {args.data}"))
    return 0


def table(result: dict, scored: str) -> str:
    """The scores for a person: what was scored, then each number rounded (--json: unrounded)."""
    rows = [("scored", scored), ("loss", f"{result['loss']:.4f} nats/token"),
            ("perplexity", f"{result['perplexity']:.2f}"),
            ("bits per byte", f"{result['bits_per_byte']:.4f}"),
            ("accuracy", f"{result['accuracy']:.4f}"), ("tokens", f"{result['tokens']:,}")]
    return "\n".join(f"{name:<15}{value}" for name, value in rows)


main = cli.entry_point(_main, "hvdlm.evaluate")

if __name__ == "__main__":
    sys.exit(main())
