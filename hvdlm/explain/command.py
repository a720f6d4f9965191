"""Look inside a run's model: one self-contained HTML page and the JSON of every number on it.

    python -m hvdlm.explain --run RUN --text "def main(" --out REPORT
    python -m hvdlm.explain --run RUN --file notes.txt --out REPORT [--integrated-gradients]
    python -m hvdlm.explain --run RUN --data DATA --split val [--documents 3] --out REPORT
        [--checkpoint PATH] [--position P] [--device auto|cpu|cuda]

REPORT/index.html shows, for the text (or each chosen document): surprisal per token with the
top-5 predictions, attention per layer and head with summaries and the logit lens (GPT, Llama),
gradient x input (and integrated gradients) for one position, hidden states and gates
(LSTM/GRU/RNN); with --data also the split's loss distribution, loss by position, hardest and
easiest documents and calibration. REPORT/explain.json holds the numbers (hvdlm/explain/).
REPORT appears only when complete.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

from hvdlm import cli, output, untrusted
from hvdlm.errors import DataError
from hvdlm.explain import page
from hvdlm.explain.report import Explainer, Options
from hvdlm.models import count_parameters
from hvdlm.training import data
from hvdlm.training.run import Run
from hvdlm.training.scoring import byte_lengths

PROG = "hvdlm.explain"


def _parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run folder with checkpoints/")
    parser.add_argument("--checkpoint", metavar="PATH", help="this checkpoint (default: newest)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", type=untrusted.utf8_argument, help="the text to explain")
    source.add_argument("--file", metavar="F", help="explain this UTF-8 text file")
    source.add_argument("--data", metavar="DATA", help="a dataset made with the run's tokenizer")
    parser.add_argument("--split", help="with --data: the split to score (e.g. val)")
    parser.add_argument("--documents", type=int, default=3, metavar="N",
                        help="with --data: documents explained one by one (default 3)")
    parser.add_argument("--max-windows", type=int, default=0, metavar="N",
                        help="with --data: windows scored (default 0 = the whole split)")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder to create")
    parser.add_argument("--position", type=int, metavar="P",
                        help="token to attribute, counted from 0 (default: most surprising)")
    parser.add_argument("--integrated-gradients", action="store_true",
                        help="also integrated gradients (zero-embedding baseline)")
    parser.add_argument("--steps", type=int, default=64, metavar="N",
                        help="integrated-gradient steps (default 64)")
    parser.add_argument("--max-tokens", type=int, default=4096, metavar="N",
                        help="explain at most this many tokens of a text or document")
    cli.add_device_option(parser, default="cpu")
    parser.add_argument("--tokenizer", metavar="FILE", help="tokenizer.json (default: the run's)")
    return parser


def _check(parser: cli.ArgumentParser, args) -> None:
    if args.data is not None and not args.split:
        parser.error("--data needs --split (e.g. --split val)")
    if args.data is None and (args.split or args.max_windows):
        parser.error("--split and --max-windows go with --data")
    if min(args.documents, args.steps, args.max_tokens - 1) < 1 or args.max_windows < 0:
        parser.error("--documents and --steps must be >= 1, --max-tokens >= 2, "
                     "--max-windows >= 0")
    args.device = cli.pick_device(args.device)


def build(args) -> dict:
    """The report dict of the command's arguments."""
    started = time.perf_counter()
    run = Run.open(args.run, args.checkpoint, args.device, args.tokenizer)
    model, state, cfg, tokenizer = run.model, run.state, run.config.model, run.tokenizer
    model.requires_grad_(False)  # gradients flow to the inputs only
    options = Options(position=args.position, integrated_gradients=args.integrated_gradients,
                      ig_steps=args.steps, max_tokens=args.max_tokens, documents=args.documents,
                      max_windows=args.max_windows)
    explainer = Explainer(model, cfg.seq_len, cfg.vocab_size, tokenizer,
                          args.device, options)
    report = {"format": "hvdlm-explain", "version": 1, "device": str(args.device), "notes": [],
              "run": {"path": str(args.run), "checkpoint": str(run.checkpoint), "step": run.step,
                      "world_size": state.world_size},
              "model": {"arch": cfg.arch, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
                        "n_embd": cfg.n_embd, "seq_len": cfg.seq_len,
                        "vocab_size": cfg.vocab_size, "parameters": count_parameters(model)}}
    if args.data is not None:
        manifest = data.open_dataset(args.data)
        dataset_tokenizer = manifest.open_tokenizer()
        state.require_tokenizer(dataset_tokenizer.sha256, manifest.tokenizer_path)
        report["dataset"] = {"path": str(args.data), **explainer.split(manifest, args.split)}
        report["texts"] = explainer.documents(manifest, args.split)
    else:
        title = "--text" if args.text is not None else args.file
        text = _read_text(args, int(byte_lengths(tokenizer).max()) * (args.max_tokens + 16))
        report["texts"] = [explainer.text(tokenizer.encode(text), title)]
    if cfg.arch not in ("gpt", "llama"):
        report["notes"].append(f"model.arch={cfg.arch}: the attention and logit-lens sections "
                               "apply to GPT and Llama runs only.")
    report["token_text"] = {str(i): t for i, t in sorted(explainer.token_text.items())}
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _read_text(args, limit: int) -> str:
    """--text, or the start of --file: at most `limit` bytes, enough for --max-tokens tokens
    (and a few more, so that the cut does not change them) however long the file is."""
    if args.text is not None:
        return args.text
    fd = untrusted.open_regular(args.file, "--file")  # no FIFO or device (hvdlm/untrusted.py)
    try:
        with open(fd, "rb") as f:
            data = f.read(limit)
    except OSError as err:
        raise DataError(f"{args.file}: cannot read ({err.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        if len(data) == limit and err.start >= len(data) - 3:  # a character cut by the limit
            return data[:err.start].decode("utf-8")
        raise DataError(f"{args.file}: not UTF-8 text (byte {err.start})") from None


def write(report: dict, out: Path) -> None:
    """REPORT_DIR with index.html and explain.json, built beside it and renamed when whole."""
    with output.staged(out, private=True) as stage:
        (stage / "explain.json").write_text(json.dumps(report, allow_nan=False) + "\n")
        (stage / "index.html").write_text(page.render(report), encoding="utf-8")


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    out = Path(args.out)
    output.refuse_existing(out)  # before the work
    write(build(args), out)
    print(f"{PROG}: wrote {out / 'index.html'}")
    return 0


main = cli.entry_point(_main, PROG)

if __name__ == "__main__":
    sys.exit(main())
