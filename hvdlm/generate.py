"""Sample continuations from a run's checkpoint, with controls.

    python -m hvdlm.generate --run RUN --prompt "def main(" [--max-new-tokens 200]
        [--temperature 0.8] [--top-k 50] [--top-p 1.0] [--repetition-penalty 1.0]
        [--stop STR ...] [--ban STR ...] [--num-samples 1] [--max-time S] [--redact-pii]
        [--seed 0] [--checkpoint PATH] [--device auto|cpu|cuda]

Prints the prompt and its continuation, which ends at end-of-text, before a --stop string, after
--max-new-tokens, or at --max-time (the whole command's seconds). A --ban string never appears
in the output, even where it would span tokens (hvdlm/models/decoding.py). --temperature 0 is
greedy. --num-samples N prints N continuations, each under a `==> sample i of N <==` line, drawn
one after another from the one --seed. --redact-pii passes the printed text through the
preprocessing's detector (hvdlm/text/pii.py). The tokenizer is the run's (`--tokenizer FILE`
when the run's dataset has moved); the checkpoint is --checkpoint or the run's newest sound one
(hvdlm/training/run.py). The model runs on --device (default cpu); the draws are made on the CPU
from --seed, so a seed gives the same text on any device (up to the device's arithmetic).
"""
from __future__ import annotations

import dataclasses
import sys
import time
from typing import Sequence

import torch

from hvdlm import cli, untrusted
from hvdlm.errors import UsageError
from hvdlm.models.decoding import MAX_BANS, DecodeOptions, continue_text
from hvdlm.text.pii import redact_pii
from hvdlm.training.run import Run

ENDED_EARLY = {"banned": "every possible next token would complete a --ban string",
               "time": "--max-time reached"}


def _parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="hvdlm.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run folder with checkpoints/")
    parser.add_argument("--prompt", required=True, type=untrusted.utf8_argument,
                        help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=50, help="0 = no top-k filter")
    parser.add_argument("--top-p", type=float, default=1.0,
                        help="nucleus: keep the most likely tokens up to this probability")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="> 1 makes tokens already in the text less likely (1 = none)")
    parser.add_argument("--stop", action="append", default=[], metavar="STR",
                        type=untrusted.utf8_argument,
                        help="end the continuation before this string (repeatable)")
    parser.add_argument("--ban", action="append", default=[], metavar="STR",
                        type=untrusted.utf8_argument,
                        help="never output this string (repeatable)")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--max-time", type=float, help="seconds for all samples together")
    parser.add_argument("--redact-pii", action="store_true",
                        help="replace e-mails, phone numbers, IPs and card numbers in the output")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", help="tokenizer.json (default: the run's dataset's)")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="sample from this checkpoint file (default: the run's newest)")
    cli.add_device_option(parser, default="cpu")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    given = sys.argv[1:] if argv is None else list(argv)
    if sum(a == "--ban" or a.startswith("--ban=") for a in given) > MAX_BANS:
        parser.error(f"--ban may be given at most {MAX_BANS} times")  # before a slow parse
    args = parser.parse_args(given)
    options = DecodeOptions(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p,
                            repetition_penalty=args.repetition_penalty, stop=tuple(args.stop),
                            ban=tuple(args.ban), max_time=args.max_time)
    try:
        options.validate()
    except UsageError as err:
        parser.error(str(err))
    if args.num_samples < 1:
        parser.error(f"--num-samples must be >= 1, got {args.num_samples}")

    deadline = time.monotonic() + args.max_time if args.max_time else None
    run = Run.open(args.run, args.checkpoint, cli.pick_device(args.device), args.tokenizer)
    tokenizer = run.tokenizer
    ids = tokenizer.encode(args.prompt) or [tokenizer.eos_id]
    generator = torch.Generator().manual_seed(args.seed)
    for i in range(1, args.num_samples + 1):
        if deadline is not None and i > 1 and time.monotonic() >= deadline:
            sys.stderr.write(f"hvdlm.generate: stopped after {i - 1} of {args.num_samples} "
                             "samples: --max-time reached\n")
            break
        if deadline is not None:  # what is left of the command's time, for this sample
            options = dataclasses.replace(options, max_time=max(deadline - time.monotonic(),
                                                                1e-9))
        out = continue_text(run.model, ids, options, seq_len=run.config.model.seq_len,
                            eos_id=tokenizer.eos_id, generator=generator,
                            detokenize=tokenizer.decode, prompt=args.prompt)
        text = args.prompt + out.text
        if args.redact_pii:
            text, _ = redact_pii(text)
        if args.num_samples > 1:
            print(f"==> sample {i} of {args.num_samples} <==")
        print(text, flush=True)
        if out.reason in ENDED_EARLY:
            sys.stderr.write(f"hvdlm.generate: sample {i} ended after {len(out.tokens)} tokens: "
                             f"{ENDED_EARLY[out.reason]}\n")
    return 0


main = cli.entry_point(_main, "hvdlm.generate")

if __name__ == "__main__":
    sys.exit(main())
