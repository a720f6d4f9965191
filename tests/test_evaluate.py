"""python -m hvdlm.evaluate on a tiny trained run: one JSON line whose numbers are recomputed
here from the val shard's tokens and the tokenizer's byte lengths, and the checkpoint scored;
--checkpoint and --device; the unigram baseline; refusals in one line. Also
hvdlm.training.scoring.score_windows on a hand-built batch.

    .venv/bin/python -m pytest tests/test_evaluate.py
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hvdlm.errors import DataError
from hvdlm.evaluate import main as evaluate_main
from hvdlm.text.shards import load_manifest, open_tokens
from hvdlm.text.tokenizer import load_tokenizer
from hvdlm.training import checkpoint
from hvdlm.training.run import Run
from hvdlm.training.scoring import score_windows
from tests.conftest import TINY_SEQ_LEN as SEQ_LEN
from tests.conftest import run_module


def evaluate(*args: object) -> dict:
    proc = run_module("hvdlm.evaluate", *args, "--json", check=True, timeout=240)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def val_windows(data: Path, seq_len: int, split: str = "val") -> torch.Tensor:
    """Every window of a split, cut here from the raw shard tokens: (N, seq_len + 1)."""
    manifest = load_manifest(data)
    rows = []
    for shard in manifest.splits[split]:
        tokens = np.asarray(open_tokens(manifest.shard_path(shard)), dtype=np.int64)
        rows += [tokens[j * seq_len:j * seq_len + seq_len + 1]
                 for j in range((len(tokens) - 1) // seq_len)]
    return torch.from_numpy(np.stack(rows))


def test_run_scores_are_recomputed_independently(tiny_run, byte_dataset):
    scores = evaluate("--run", tiny_run, "--data", byte_dataset)
    assert set(scores) == {"loss", "perplexity", "bits_per_byte", "accuracy", "tokens",
                           "checkpoint", "step"}
    assert scores["step"] == 4 and scores["checkpoint"] == str(
        tiny_run / "checkpoints" / "step-00000004.pt")
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]), rel=1e-9)

    windows = val_windows(byte_dataset, SEQ_LEN)
    targets = windows[:, 1:]
    assert scores["tokens"] == targets.numel()
    tokenizer = load_tokenizer(load_manifest(byte_dataset).tokenizer_path)
    lengths = tokenizer.token_byte_lengths()
    # The byte tokenizer: every byte token is one byte, end-of-text none.
    assert lengths[:256].tolist() == [1] * 256 and lengths[tokenizer.eos_id] == 0
    n_bytes = int(lengths[targets.numpy()].sum())
    assert n_bytes == int((targets != tokenizer.eos_id).sum())
    assert scores["bits_per_byte"] == pytest.approx(
        scores["loss"] * scores["tokens"] / math.log(2) / n_bytes, rel=1e-9)

    # Loss and accuracy from the checkpoint's model, by hand: mean cross-entropy of the targets.
    model = Run.open(tiny_run).model
    with torch.no_grad():
        logits = torch.cat([model(windows[i:i + 256, :-1]) for i in range(0, len(windows), 256)])
    log_probs = torch.log_softmax(logits.double(), -1)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert scores["loss"] == pytest.approx(nll.mean().item(), rel=1e-5)
    correct = (logits.argmax(-1) == targets).double().mean().item()
    assert scores["accuracy"] == pytest.approx(correct)
    assert 0 < scores["accuracy"] < 1
    assert scores["loss"] < math.log(257)  # four steps already beat a uniform guess


def test_scores_do_not_depend_on_the_batch_size(tiny_run, byte_dataset):
    a = evaluate("--run", tiny_run, "--data", byte_dataset, "--batch-size", "7")
    b = evaluate("--run", tiny_run, "--data", byte_dataset, "--batch-size", "64")
    assert a["tokens"] == b["tokens"] and a["accuracy"] == b["accuracy"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_unigram_baseline(byte_dataset):
    scores = evaluate("--baseline", "unigram", "--data", byte_dataset, "--seq-len", str(SEQ_LEN))
    manifest = load_manifest(byte_dataset)
    counts = np.zeros(manifest.vocab_size)
    for shard in manifest.splits["train"]:
        counts += np.bincount(np.asarray(open_tokens(manifest.shard_path(shard))),
                              minlength=manifest.vocab_size)
    log_p = np.log((counts + 1) / (counts.sum() + manifest.vocab_size))  # add-one smoothing
    targets = val_windows(byte_dataset, SEQ_LEN)[:, 1:].numpy()
    assert scores["tokens"] == targets.size
    assert scores["loss"] == pytest.approx(-log_p[targets].mean(), rel=1e-5)
    assert scores["accuracy"] == pytest.approx((targets == counts.argmax()).mean())
    assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]), rel=1e-9)



def gpt2_byte_of_char() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's bytes_to_unicode), inverted."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in kept]
    return {chr(b): b for b in kept} | {chr(256 + i): b for i, b in enumerate(moved)}


def bytes_of_each_token(tokenizer_json: Path) -> dict[int, bytes]:
    """The raw bytes each id of a byte-level BPE stands for, read from tokenizer.json itself;
    special tokens (end-of-text) stand for none."""
    spec = json.loads(tokenizer_json.read_text())
    byte_of = gpt2_byte_of_char()
    out = {i: bytes(byte_of[c] for c in text) for text, i in spec["model"]["vocab"].items()
           if all(c in byte_of for c in text)}
    return out | {t["id"]: b"" for t in spec["added_tokens"] if t["special"]}


def test_unigram_bits_per_byte_on_bpe_tokens_by_hand(bpe_dataset, capsys):
    """Bits per byte where tokens are several bytes long: the unigram's summed loss (closed
    form) over ln 2 over the predicted tokens' bytes, all computed here. Scored on the train
    split, whose windows cross documents: end-of-text targets must count no bytes."""
    assert evaluate_main(["--baseline", "unigram", "--data", str(bpe_dataset), "--split",
                          "train", "--seq-len", str(SEQ_LEN), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)

    manifest = load_manifest(bpe_dataset)
    token_bytes = bytes_of_each_token(manifest.tokenizer_path)
    tokenizer = load_tokenizer(manifest.tokenizer_path)
    counts = np.zeros(manifest.vocab_size)
    for shard in manifest.splits["train"]:
        tokens = open_tokens(manifest.shard_path(shard)).tolist()
        # The byte table is right: it spells the documents.
        assert b"".join(token_bytes[t] for t in tokens).decode() == tokenizer.decode(tokens)
        counts += np.bincount(tokens, minlength=manifest.vocab_size)
    log_p = np.log((counts + 1) / (counts.sum() + manifest.vocab_size))
    targets = val_windows(bpe_dataset, SEQ_LEN, "train")[:, 1:].numpy().ravel()
    assert tokenizer.eos_id in targets
    n_bytes = sum(len(token_bytes[t]) for t in targets.tolist())
    assert n_bytes > 1.3 * len(targets)  # merged tokens: bytes and tokens differ a lot
    assert scores["tokens"] == len(targets)
    assert scores["bits_per_byte"] == pytest.approx(
        -log_p[targets].sum() / math.log(2) / n_bytes, rel=1e-5)

def test_wrong_tokenizer_is_refused_in_one_line(tiny_run, bpe_dataset):
    proc = run_module("hvdlm.evaluate", "--run", tiny_run, "--data", bpe_dataset, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "not the tokenizer this checkpoint was trained with" in proc.stderr
    assert str(bpe_dataset / "tokenizer.json") in proc.stderr


def test_run_without_checkpoint_is_one_line(tmp_path, byte_dataset):
    proc = run_module("hvdlm.evaluate", "--run", tmp_path, "--data", byte_dataset, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "no checkpoint" in proc.stderr


def test_checkpoint_and_device_choose_what_is_scored(tiny_run, byte_dataset, tmp_path):
    """An older checkpoint (step 2, all weights zero: uniform logits over the 257 real tokens)
    beside the newest (step 4) is scored when --checkpoint names it, on --device cpu."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = checkpoint.load(run / "checkpoints" / "step-00000004.pt")
    state.model = {k: torch.zeros_like(v) for k, v in state.model.items()}
    state.step = 2
    older = checkpoint.save(tmp_path / "elsewhere", state, keep=1)  # not to prune step 4
    for path in (older, older.with_name(older.name + ".sha256")):
        shutil.copy(path, run / "checkpoints" / path.name)
    chosen = run / "checkpoints" / older.name
    scores = evaluate("--run", run, "--data", byte_dataset, "--checkpoint", chosen,
                      "--device", "cpu")
    assert scores["step"] == 2 and scores["checkpoint"] == str(chosen)
    assert scores["loss"] == pytest.approx(math.log(257), rel=1e-6)
    newest = evaluate("--run", run, "--data", byte_dataset, "--device", "cpu")
    assert newest["step"] == 4 and newest["loss"] < math.log(257) - 0.1


def test_a_mistyped_run_is_named_in_one_line(tmp_path, byte_dataset, capsys):
    assert evaluate_main(["--run", str(tmp_path / "nope"), "--data", str(byte_dataset)]) == 1
    assert capsys.readouterr().err == \
        f"hvdlm.evaluate: error: {tmp_path / 'nope'}: no such run folder\n"


@pytest.mark.parametrize("args, message", [
    (["--data", "D"], "give exactly one of --run and --baseline"),
    (["--data", "D", "--baseline", "unigram", "--checkpoint", "C"], "--checkpoint goes with"),
    (["--data", "D", "--run", "R", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["--data", "D", "--run", "R", "--baseline", "unigram"], "give exactly one of --run"),
    (["--data", "D", "--run", "R", "--batch-size", "0"], "--batch-size and --seq-len must be"),
    (["--data", "D", "--baseline", "unigram", "--seq-len", "0"], "must be >= 1"),
    (["--data", "D", "--baseline", "bigram"], "invalid choice: 'bigram'"),
    (["--run", "R"], "the following arguments are required: --data"),
])
def test_bad_options_exit_2_in_one_line(args, message):
    proc = run_module("hvdlm.evaluate", *args, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr


# -- score_windows on a hand-built batch ---------------------------------------------------------

class Bigram(torch.nn.Module):
    """Logits of the next token are a fixed row per current token: easy to score by hand."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


def test_score_windows_matches_a_manual_cross_entropy():
    torch.manual_seed(0)
    vocab = 6
    model = Bigram(torch.randn(vocab, vocab)).train()
    batches = [torch.tensor([[0, 1, 2, 3, 4], [5, 5, 0, 2, 1]]), torch.tensor([[3, 3, 3, 1, 0]])]
    token_bytes = torch.tensor([1, 2, 3, 0, 4, 1])  # token 3 is "special": no bytes
    got = score_windows(model, batches, token_bytes, torch.device("cpu"))

    loss_sum = correct = tokens = n_bytes = 0
    for window in batches:
        for row in window.tolist():
            for cur, nxt in zip(row[:-1], row[1:]):
                logits = model.table[cur].double()
                loss_sum += math.log(logits.exp().sum().item()) - logits[nxt].item()
                correct += int(logits.argmax().item() == nxt)
                tokens += 1
                n_bytes += int(token_bytes[nxt])
    assert got["tokens"] == tokens == 12
    assert got["loss"] == pytest.approx(loss_sum / tokens, rel=1e-6)
    assert got["perplexity"] == pytest.approx(math.exp(loss_sum / tokens), rel=1e-6)
    assert got["bits_per_byte"] == pytest.approx(loss_sum / math.log(2) / n_bytes, rel=1e-6)
    assert got["accuracy"] == pytest.approx(correct / tokens)
    assert model.training  # scoring put it in eval mode and back

    ref = F.cross_entropy(torch.cat([model.table[w[:, :-1]].reshape(-1, vocab) for w in batches]),
                          torch.cat([w[:, 1:].reshape(-1) for w in batches]))
    assert got["loss"] == pytest.approx(ref.item(), rel=1e-6)


def test_score_windows_reduce_sums_totals_before_the_ratios():
    model = Bigram(torch.randn(4, 4))
    batch = [torch.tensor([[0, 1, 2, 3]])]
    one = score_windows(model, batch, torch.ones(4, dtype=torch.long), torch.device("cpu"))
    two = score_windows(model, batch, torch.ones(4, dtype=torch.long), torch.device("cpu"),
                        reduce=lambda t: t * 2)  # as if a second rank saw the same windows
    assert two["tokens"] == 2 * one["tokens"]
    for key in ("loss", "perplexity", "bits_per_byte", "accuracy"):
        assert two[key] == pytest.approx(one[key])
    with pytest.raises(DataError, match="evaluation saw no tokens"):
        score_windows(model, [], torch.ones(4, dtype=torch.long), torch.device("cpu"))
