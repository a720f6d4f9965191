"""Evaluate a run's latest checkpoint: loss, perplexity, bits per byte, token accuracy.

    python -m hvdlm.evaluate --run RUN --data DATA [--split val]
    {"loss": 3.91, "perplexity": 49.9, "bits_per_byte": 1.52, "accuracy": 0.31, "tokens": 81920}
    python -m hvdlm.evaluate --baseline unigram --data DATA --seq-len 128   (no model needed)

Every window of the split is scored (any dataset made with the run's tokenizer). Loss is in
nats per predicted token; bits per byte divides the summed loss by ln 2 and by the exact UTF-8
byte length of the predicted tokens, so it compares across tokenizers. The same
`score_windows` serves the periodic evaluation of training, where `reduce` sums over ranks.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hvdlm import checkpoint, cli, data, shards
from hvdlm.config import config_from_dict
from hvdlm.errors import CheckpointError, DataError
from hvdlm.models import build_model
from hvdlm.models.unigram import UnigramLM
from hvdlm.tokenizer import load_tokenizer

Reduce = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def score_windows(model: torch.nn.Module, batches, byte_lengths: torch.Tensor,
                  device: torch.device, autocast: bool = False,
                  reduce: Reduce = lambda t: t) -> dict[str, float]:
    """Sum loss, correct predictions, tokens and bytes over `batches`, then `reduce` them."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # loss (nats), correct, tokens, bytes
    for window in batches:
        window = window.to(device, non_blocking=True)
        x, y = window[:, :-1], window[:, 1:]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
        logits = logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        totals += torch.tensor([loss.item(), (logits.argmax(-1) == y).sum().item(), y.numel(),
                                byte_lengths[y.cpu()].sum().item()], dtype=torch.float64)
    model.train(was_training)
    loss_sum, correct, tokens, n_bytes = reduce(totals).tolist()
    if tokens == 0:
        raise DataError("evaluation saw no tokens")
    loss = loss_sum / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
            "bits_per_byte": loss_sum / math.log(2) / max(n_bytes, 1.0),
            "accuracy": correct / tokens, "tokens": int(tokens)}


def load_run_model(run: str | Path) -> tuple[torch.nn.Module, dict]:
    """The model of a run's newest sound checkpoint (on CPU, eval mode) and the checkpoint."""
    found = checkpoint.load_latest(run)
    if found is None:
        raise CheckpointError(f"{Path(run) / 'checkpoints'}: no checkpoint to load")
    _, state = found
    cfg = config_from_dict(state["config"])
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])
    return model.eval(), state


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
    tokenizer = load_tokenizer(manifest.tokenizer_path)
    if args.baseline:
        train_tokens = (shards.open_tokens(manifest.shard_path(s)) for s in manifest.splits["train"])
        model, seq_len = UnigramLM.fit(train_tokens, manifest.vocab_size), args.seq_len
    else:
        model, state = load_run_model(args.run)
        seq_len = config_from_dict(state["config"]).model.seq_len
        checkpoint.require_tokenizer(state, tokenizer.sha256, manifest.tokenizer_path)
    windows = data.TokenWindows(manifest, args.split, seq_len)
    batches = data.loader(windows, data.EvalBatches(len(windows), args.batch_size, 0, 1), 0)
    byte_lengths = torch.from_numpy(np.asarray(tokenizer.token_byte_lengths(), dtype=np.int64))
    result = score_windows(model, batches, byte_lengths, torch.device("cpu"))
    print(json.dumps(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv, prog="hvdlm.evaluate")


if __name__ == "__main__":
    sys.exit(main())
