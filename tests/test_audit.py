"""python -m hvdlm.audit on models made to memorise, and the canaries of hvdlm.preprocess.

One synthetic corpus (random pseudo-words, so nothing in it is predictable but by rote): 40
filler documents seen once, 4 notes that each carry a planted e-mail address and occur 60
times, and canaries "the code is {d4}" (3 inserted once, 3 inserted 100 times, 3 controls).
It is preprocessed three ways (as it is, --dedup, --redact-pii; byte tokenizer) and a GPT is
trained on each in this process: 2 layers, 64 wide, 32-token context, 300 steps of 16 windows,
lr 3e-3 -> 1e-3, no weight decay, one thread (about 5 s each on a busy 2-core machine). That
is about 5 epochs: each note is seen about 300 times (memorised), a filler document 5 times
(not), and after --dedup each note 8 times (not).

    .venv/bin/python -m pytest tests/test_audit.py -q -x
"""
from __future__ import annotations

import json
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from hvdlm import preprocess
from hvdlm.audit import command as audit
from hvdlm.cluster.distributed import World
from hvdlm.config import load_config
from hvdlm.text import canaries, pipeline
from hvdlm.text.shards import load_manifest, open_tokens, read_doc_offsets
from hvdlm.training.trainer import Trainer

EMAILS = ["mira.kovac@example.org", "t.okafor@mail.example.net", "ines.duarte@example.com",
          "lars.holm@example.io"]
CANARIES = ["--canaries", "3", "--canary-repeats", "1,100", "--canary-format", "the code is {d4}"]
BYTE = ["--tokenizer", "byte", "--val-fraction", "0.1", "--workers", "1"]
TRAIN = ["model.n_layer=2", "model.n_embd=64", "model.n_head=4", "model.seq_len=32",
         "train.micro_batch=16", "train.max_steps=300", "train.warmup_steps=10", "train.lr=3e-3",
         "train.min_lr=1e-3", "train.weight_decay=0", "train.eval_interval=1000",
         "train.eval_batches=1", "train.ckpt_interval=300", "train.log_interval=100",
         "train.log_format=lines"]
AUDIT = ["--documents", "64", "--prefix", "12", "--suffix", "12", "--samples", "64",
         "--sample-tokens", "96", "--temperature", "0.7", "--estimate-samples", "2000"]
WORLD = World(rank=0, size=1, local_rank=0, local_size=1, device=torch.device("cpu"))


def make_corpus(root: Path, filler: int = 40, copies: int = 60) -> Path:
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnoprstuvwy") for _ in range(rng.randint(3, 8)))
             for _ in range(400)]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(18, 30))) + "."
            for _ in range(filler)]
    notes = [f"Note {i}: " + " ".join(rng.choice(words) for _ in range(4))
             + f". Write to {email} today." for i, email in enumerate(EMAILS)]
    docs += notes * copies
    rng.shuffle(docs)
    root.mkdir(parents=True)
    (root / "notes.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    return root


def train(data: Path, run: Path, *overrides: str) -> Path:
    run.mkdir(parents=True)
    threads = torch.get_num_threads()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    torch.set_num_threads(1)  # far faster than 2 threads on 2 cores shared with other work
    try:
        cfg = load_config(None, [*TRAIN, *overrides])
        assert Trainer(cfg, data, run, WORLD, "never").run() == 0
    finally:
        torch.set_num_threads(threads)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return run


def run_audit(run: Path, data: Path, out: Path, *extra: str) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert audit.main(["--run", str(run), "--data", str(data), "--out", str(out), *AUDIT,
                           *extra]) == 0
    finally:
        torch.set_num_threads(threads)
    assert (out / "audit.md").read_text().startswith("# Memorisation audit")
    return json.loads((out / "audit.json").read_text())


def pre(*args) -> int:
    return preprocess.main([str(a) for a in args])


@dataclass
class Study:
    root: Path
    corpus: Path
    data: dict[str, Path]
    runs: dict[str, Path]
    audits: dict[str, dict]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    root = tmp_path_factory.mktemp("audit")
    corpus = make_corpus(root / "corpus")
    s = Study(root, corpus, {}, {}, {})
    for name, flags in (("plain", []), ("dedup", ["--dedup"]), ("redact", ["--redact-pii"])):
        s.data[name] = root / f"data-{name}"
        assert pre(corpus, "--out", s.data[name], *BYTE, *CANARIES, *flags) == 0
        s.runs[name] = train(s.data[name], root / f"run-{name}")
        s.audits[name] = run_audit(s.runs[name], s.data[name], root / f"audit-{name}")
    return s


# ---- exposure -------------------------------------------------------------------------------

def test_exposure_grows_with_repeats_and_the_estimate_agrees_with_enumeration(study):
    e = study.audits["plain"]["exposure"]
    assert e["space"] == 10_000 and e["method"].startswith("exact enumeration")
    groups = {g["repeats"]: g for g in e["groups"]}
    assert sorted(groups) == [0, 1, 100] and all(g["n"] == 3 for g in groups.values())
    top = e["max_exposure_bits"]  # log2(10^4) = 13.29: ranked first of all candidates
    assert groups[100]["mean_exposure_exact"] > top - 2.5     # measured 12.43
    assert groups[0]["mean_exposure_exact"] < 2.5             # controls, measured 1.18
    assert groups[1]["mean_exposure_exact"] < 4               # inserted once, measured 2.44
    assert groups[100]["mean_exposure_exact"] > groups[1]["mean_exposure_exact"] + 7
    # The skew-normal estimate (2,000 random candidates) against exact enumeration: within
    # 0.5 bit where the rank is above 8 (measured: within 0.16); at the top, where the sample
    # cannot resolve ranks and the fit extrapolates past log2(space), never below exact - 0.5.
    for g in e["groups"]:
        for s in g["secrets"]:
            if s["rank"] > 8:
                assert abs(s["exposure_estimate"] - s["exposure_exact"]) <= 0.5, s
            else:
                assert s["exposure_estimate"] >= s["exposure_exact"] - 0.5, s


# ---- extraction -----------------------------------------------------------------------------

def test_repeated_documents_are_extracted_and_dedup_brings_it_down(study):
    plain, dedup = study.audits["plain"]["extraction"], study.audits["dedup"]["extraction"]
    assert plain["train"]["occurrences"].startswith("copies in the dataset")
    assert dedup["train"]["occurrences"].startswith("recorded at --dedup")
    repeated = plain["train"]["by_occurrences"]["10-99"]  # the notes, 60 copies each
    assert repeated["documents"] >= 30 and repeated["rate"] >= 0.75   # measured 1.00
    assert plain["train"]["by_occurrences"]["1"]["rate"] <= 0.1      # filler: 0.00
    assert plain["val"]["rate"] == 0                                  # baseline: 0.00
    # --dedup: the notes are there once each, known to have occurred 60 times before.
    once = dedup["train"]["by_occurrences"]["10-99"]
    assert once["documents"] == 4 and once["rate"] <= 0.25            # measured 0.00
    assert dedup["train"]["rate"] < plain["train"]["rate"] - 0.5


# ---- PII in samples -------------------------------------------------------------------------

def planted(result: dict) -> set[str]:
    return {s["text"] for s in result["pii"]["strings"] if s["text"] in EMAILS}


def test_redaction_keeps_planted_emails_out_of_samples(study):
    plain, redact = study.audits["plain"], study.audits["redact"]
    assert planted(plain)  # measured: 2 of the 4 addresses, verbatim in the training text
    assert all(s["in_training_text"] for s in plain["pii"]["strings"] if s["text"] in EMAILS)
    assert plain["pii"]["by_kind"]["email"]["in_training_text"] >= 1
    assert not planted(redact) and redact["pii"]["by_kind"]["email"]["in_training_text"] == 0
    text = (study.root / "audit-plain" / "audit.md").read_text()
    assert "| email |" in text and "## Canary exposure" in text


# ---- the canaries of preprocessing ----------------------------------------------------------

def files_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "preprocess_report.json"}


def docs_of(out: Path, split: str) -> list[bytes]:
    m = load_manifest(out)
    docs = []
    for s in m.splits[split]:
        tokens, offsets = open_tokens(m.shard_path(s)), read_doc_offsets(m.shard_path(s))
        docs += [tokens[a:b].tobytes() for a, b in zip(offsets[:-1], offsets[1:])]
    return docs


@pytest.fixture(scope="module")
def bare(study) -> Path:
    """The same corpus without --canaries."""
    out = study.root / "data-bare"
    assert pre(study.corpus, "--out", out, *BYTE) == 0
    return out


def test_without_canaries_the_dataset_is_byte_identical(study, bare, tmp_path, monkeypatch):
    def unreachable(*args, **kwargs):
        raise AssertionError("canary code ran without --canaries")
    monkeypatch.setattr(pipeline, "Inserter", unreachable)
    assert pre(study.corpus, "--out", tmp_path / "again", *BYTE) == 0
    assert files_of(tmp_path / "again") == files_of(bare)
    assert not (bare / canaries.FILE).exists()
    report = json.loads((bare / "preprocess_report.json").read_text())
    assert "canaries" not in report["options"]  # the report reads as before, too
    # With them: val untouched, and train is the same documents once the canaries are out.
    with_them = study.data["plain"]
    found = canaries.load(with_them)
    inserted = {d for c in found["canaries"] for d in c["documents"]}
    assert len(inserted) == 3 * 1 + 3 * 100
    assert docs_of(with_them, "val") == docs_of(bare, "val")
    train = docs_of(with_them, "train")
    assert [d for i, d in enumerate(train) if i not in inserted] == docs_of(bare, "train")
    for c in found["canaries"]:  # each copy: the canary's text, then end-of-text (256)
        assert all(train[d] == np.array([*c["text"].encode(), 256], np.uint16).tobytes()
                   for d in c["documents"])
    secrets = {c["secret"] for c in found["canaries"] + found["controls"]}
    assert len(secrets) == 9 and all(len(s) == 4 and s.isdigit() for s in secrets)


def test_canaries_do_not_depend_on_workers_or_array_tasks(study, tmp_path):
    args = [study.corpus, *BYTE[:-2], *CANARIES, "--shard-tokens", "4000"]
    assert pre(*args, "--out", tmp_path / "w1", "--workers", "1") == 0
    assert pre(*args, "--out", tmp_path / "w2", "--workers", "2") == 0
    k = ["--num-tasks", "2", "--workers", "1"]
    out = tmp_path / "arr"
    assert pre(*args, "--out", out, *k, "--tokenizer-only") == 0
    for i in (1, 0):
        assert pre(*args, "--out", out, *k, "--task-index", i) == 0
    assert pre(*args, "--out", out, *k, "--merge") == 0
    reference = files_of(tmp_path / "w1")
    assert canaries.FILE in reference and len(load_manifest(tmp_path / "w1").splits["train"]) > 2
    assert files_of(tmp_path / "w2") == reference == files_of(out)


# ---- any model, and bad input ----------------------------------------------------------------

def naive_bits(model, tok, text: str) -> float:
    """-log2 P(text | end-of-text), one text at a time: what score_texts must equal."""
    ids = torch.tensor([[tok.eos_id, *tok.encode(text)]])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids[:, :-1]).double(), -1)[0]
    return -float(lp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum()) / np.log(2)


def test_recurrent_run_with_bpe_gets_the_whole_report(study, tmp_path):
    data = tmp_path / "bpe"
    assert pre(study.corpus, "--out", data, "--tokenizer", "bpe", "--vocab-size", "300",
               "--workers", "1", "--canaries", "2", "--canary-repeats", "5",
               "--canary-format", "pin {d3}!") == 0
    run = train(data, tmp_path / "gru", "model.arch=gru", "train.max_steps=20",
                "train.ckpt_interval=20")
    r = run_audit(run, data, tmp_path / "report", "--documents", "8", "--samples", "4",
                  "--estimate-samples", "200")
    assert r["arch"] == "gru" and r["step"] == 20
    assert r["extraction"]["train"]["documents"] == 8 and r["pii"]["samples"] == 4
    ranks = [s["rank"] for g in r["exposure"]["groups"] for s in g["secrets"]]
    assert len(ranks) == 4 and all(1 <= k <= 1000 for k in ranks)
    # The batched, sibling-sharing scorer equals scoring each text alone, for BPE texts of
    # different token counts (GRU) and for byte texts (the GPT of the study).
    from hvdlm.audit import exposure, runmodel
    texts = ["pin 007!", "pin 123!", "pin 999!", "pin 12", "x", "Note 0: pin 5!",
             "the code is 1230", "the code is 1237", "the code is 1239"]  # siblings
    for run_dir, data_dir in ((run, data), (study.runs["plain"], study.data["plain"])):
        tok = load_manifest(data_dir).open_tokenizer()
        lm = runmodel.load(run_dir, None, tok, torch.device("cpu"))
        got = exposure.score_texts(lm, tok, texts)
        want = [naive_bits(lm.model, tok, t) for t in texts]
        assert np.allclose(got, want, atol=1e-3), (got, want)


@pytest.mark.parametrize("case,code,message", [
    ("no checkpoint", 1, "checkpoints: no checkpoint to load"),
    ("other tokenizer", 1, "not the tokenizer this checkpoint was trained with"),
    ("exposure without canaries", 1, "no canaries.json; preprocess with --canaries"),
    ("bad section", 2, "--sections: 'loss' is not one of"),
    ("out exists", 1, "already exists"),
])
def test_audit_bad_input_is_one_line_and_writes_nothing(study, bare, tmp_path, capsys, case, code,
                                                         message):
    run, data, extra, out = study.runs["plain"], study.data["plain"], [], tmp_path / "report"
    if case == "no checkpoint":
        run = tmp_path / "empty-run"
        run.mkdir()
    elif case == "other tokenizer":
        data = tmp_path / "bpe"
        assert pre(study.corpus, "--out", data, "--tokenizer", "bpe", "--vocab-size", "300",
                   "--workers", "1") == 0
    elif case == "exposure without canaries":
        data, extra = bare, ["--sections", "exposure"]
    elif case == "bad section":
        extra = ["--sections", "exposure,loss"]
    else:
        out.mkdir()
        (out / "mine.txt").write_text("keep")
    capsys.readouterr()
    assert audit.main(["--run", str(run), "--data", str(data), "--out", str(out),
                       *extra]) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert err.startswith("hvdlm.audit: error: ")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("report")) == \
        (["report"] if case == "out exists" else [])


def test_dataset_without_canaries_skips_exposure_with_a_note(study, bare, tmp_path):
    r = run_audit(study.runs["plain"], bare, tmp_path / "report", "--sections",
                  "exposure,extraction", "--documents", "4")
    assert r["exposure"]["note"].startswith("skipped: the dataset has no canaries.json")
    assert "pii" not in r and r["extraction"]["train"]["documents"] == 4


@pytest.mark.parametrize("args,message", [
    (["--canaries", "2", "--canary-format", "no digits here"], "has no {dK} placeholder"),
    (["--canaries", "2", "--canary-repeats", "1,0"], "--canary-repeats: every count"),
    (["--canaries", "2", "--canary-repeats", "a,b"], "--canary-repeats: expected counts"),
    (["--canaries", "9", "--canary-format", "pin {d1}"], "too many secrets"),
    (["--canary-seed", "3"], "--canary-seed needs --canaries N"),
])
def test_canary_options_are_checked(study, tmp_path, capsys, args, message):
    capsys.readouterr()
    assert pre(study.corpus, "--out", tmp_path / "out", *BYTE, *args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
