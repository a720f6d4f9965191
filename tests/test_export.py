"""python -m hvdlm.export against the real transformers (no hub): the exported GPT-2 gives
hvdlm's logits and greedy text, AutoTokenizer encodes as hvdlm does, RNNs are refused.

    .venv/bin/python -m pytest tests/test_export.py
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hvdlm.models import safetensors
from hvdlm.text.shards import load_manifest, open_tokens, read_doc_offsets
from hvdlm.text.tokenizer import EOS, load_tokenizer
from hvdlm.training.run import Run
from tests.conftest import TINY_RUN, run_module

transformers = pytest.importorskip("transformers", reason="transformers is a dev dependency")
SEQ_LEN = 96
GPT = ["model.n_layer=2", "model.n_embd=32", "model.n_head=2", f"model.seq_len={SEQ_LEN}",
       "train.max_steps=30", "train.micro_batch=8", "train.warmup_steps=5",
       "train.eval_interval=30", "train.ckpt_interval=30"]


@pytest.fixture(scope="module")
def gpt_run(bpe_dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("export") / "run"
    run_module("hvdlm.train", "--data", bpe_dataset, "--out", run, *GPT, check=True, timeout=240)
    return run


@pytest.fixture(scope="module")
def exported(gpt_run) -> Path:
    out = gpt_run.parent / "hf"
    proc = run_module("hvdlm.export", "--run", gpt_run, "--out", out, check=True)
    assert proc.stdout.strip() == f"hvdlm.export: wrote {out}"
    return out


def _val_documents(data: Path) -> list[list[int]]:
    """The val split's documents as token ids, end-of-text included."""
    manifest = load_manifest(data)
    shard = manifest.shard_path(manifest.splits["val"][0])
    tokens, offsets = open_tokens(shard)[:], read_doc_offsets(shard)
    return [tokens[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]


def test_exported_logits_equal_hvdlm_logits(gpt_run, exported, bpe_dataset):
    model = Run.open(gpt_run).model
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported, local_files_only=True)
    tokens = np.concatenate([np.array(d) for d in _val_documents(bpe_dataset)])
    windows = torch.as_tensor(tokens[:len(tokens) // SEQ_LEN * SEQ_LEN].astype(np.int64))
    windows = windows.view(-1, SEQ_LEN)[:8]
    assert len(windows) >= 2
    with torch.no_grad():
        ours, theirs = model(windows), hf.eval()(windows).logits
    assert (ours - theirs).abs().max() <= 1e-4 * ours.abs().max()


def test_autotokenizer_encodes_as_hvdlm(exported, bpe_dataset):
    ours = load_tokenizer(bpe_dataset / "tokenizer.json")
    docs = [ours.decode(d) for d in _val_documents(bpe_dataset)]
    texts = docs + [f"a{EOS}b stays text", "  leading spaces\n\ttabs ünïcødé"]
    for folder in (bpe_dataset, exported):  # preprocess's DATA loads as well as the export
        theirs = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        assert theirs.eos_token_id == ours.eos_id and theirs.eos_token == EOS
        for text in texts:
            assert theirs(text)["input_ids"] == ours.encode(text), text
            assert theirs.decode(ours.encode(text)) == text


def test_greedy_generate_equals_hvdlm_generate(gpt_run, exported):
    prompt, n = "def parse(self, text", 50
    ours = run_module("hvdlm.generate", "--run", gpt_run, "--prompt", prompt, "--temperature",
                      "0", "--max-new-tokens", str(n), check=True).stdout
    tok = transformers.AutoTokenizer.from_pretrained(exported, local_files_only=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported, local_files_only=True)
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    out = hf.generate(ids, do_sample=False, max_new_tokens=n)[0, ids.shape[1]:]
    assert len(out) == n or out[-1] == tok.eos_token_id
    assert ours == prompt + tok.decode(out, skip_special_tokens=True) + "\n"


def test_bf16_export_and_refusals(gpt_run, byte_dataset, exported, tmp_path):
    proc = run_module("hvdlm.export", "--run", gpt_run, "--out", tmp_path / "bf16", "--dtype",
                      "bf16", check=True)
    half = safetensors.load(tmp_path / "bf16" / "model.safetensors")
    full = safetensors.load(exported / "model.safetensors")
    assert half.keys() == full.keys() and proc.returncode == 0
    for name, t in half.items():
        assert t.dtype == torch.bfloat16 and torch.equal(t, full[name].to(torch.bfloat16))
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"

    lstm = tmp_path / "lstm"
    run_module("hvdlm.train", "--data", byte_dataset, "--out", lstm, *TINY_RUN,
               "model.arch=lstm", "train.max_steps=1", check=True)
    refused = run_module("hvdlm.export", "--run", lstm, "--out", tmp_path / "x")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "model.arch=lstm cannot be exported" in refused.stderr
    assert "supports model.arch=gpt" in refused.stderr and not (tmp_path / "x").exists()
    again = run_module("hvdlm.export", "--run", gpt_run, "--out", exported)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert f"{exported}: already exists" in again.stderr


def test_init_from_the_export_then_export_again_gives_identical_tensors(
        gpt_run, exported, bpe_dataset, tmp_path):
    # lr 1e-30: the one step it must take cannot move an fp32 weight, so any difference
    # would come from the mapping in and out.
    still = ["train.max_steps=1", "train.lr=1e-30", "train.min_lr=0", "train.warmup_steps=0"]
    run = tmp_path / "from_hf"
    run_module("hvdlm.train", "--data", bpe_dataset, "--out", run, *GPT, *still,
               f"train.init_from={exported}", check=True)
    run_module("hvdlm.export", "--run", run, "--out", tmp_path / "again", check=True)
    before = safetensors.load(exported / "model.safetensors")
    after = safetensors.load(tmp_path / "again" / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    ckpt = sorted((gpt_run / "checkpoints").glob("step-*.pt"))[-1]
    from_ckpt = tmp_path / "from_ckpt"
    run_module("hvdlm.train", "--data", bpe_dataset, "--out", from_ckpt, *GPT, *still,
               f"train.init_from={ckpt}", check=True)
    assert sorted(p.name for p in (from_ckpt / "checkpoints").glob("*.pt")) == [
        "step-00000001.pt"]  # a fresh step counter, not the source's


def test_init_from_with_another_shape_is_one_line(exported, bpe_dataset, tmp_path):
    proc = run_module("hvdlm.train", "--data", bpe_dataset, "--out", tmp_path / "r", *GPT,
                      "model.n_embd=64", f"train.init_from={exported}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"train.init_from={exported}: model.n_embd is 32 there, 64 here" in proc.stderr
    assert not (tmp_path / "r").exists()
