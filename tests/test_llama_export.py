"""A llama run through Hugging Face and back (hvdlm/models/llama_format.py), against the real
transformers (no hub): the exported LlamaForCausalLM gives hvdlm's logits with fewer key/value
heads than query heads and untied embeddings, greedy text through both caches agrees, and
export -> train.init_from -> export gives identical tensors.

    .venv/bin/python -m pytest tests/test_llama_export.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hvdlm.config import ModelConfig
from hvdlm.errors import UsageError
from hvdlm.models import build_model, llama_format, safetensors
from hvdlm.training import init_from
from hvdlm.training.run import Run
from tests.conftest import run_module, trained_run

transformers = pytest.importorskip("transformers", reason="transformers is a dev dependency")
SEQ_LEN = 64
LLAMA = ["model.arch=llama", "model.n_layer=2", "model.n_embd=32", "model.n_head=4",
         "model.n_kv_head=2", "model.tie_embeddings=false", "model.rope_theta=500000",
         f"model.seq_len={SEQ_LEN}", "train.max_steps=20", "train.micro_batch=8",
         "train.warmup_steps=5", "train.eval_interval=20", "train.ckpt_interval=20"]


@pytest.fixture(scope="module")
def llama_run(bpe_dataset, tmp_path_factory) -> Path:
    return trained_run(bpe_dataset, tmp_path_factory.mktemp("llama"), *LLAMA)


@pytest.fixture(scope="module")
def exported(llama_run) -> Path:
    out = llama_run.parent / "hf"
    run_module("hvdlm.export", "--run", llama_run, "--out", out, check=True)
    return out


def test_exported_llama_logits_equal_hvdlm_logits(llama_run, exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_key_value_heads"] == 2 < config["num_attention_heads"] == 4
    model = Run.open(llama_run).model
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported, local_files_only=True)
    assert type(hf).__name__ == "LlamaForCausalLM"
    windows = torch.randint(0, model.cfg.vocab_size, (4, SEQ_LEN),
                            generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(windows), hf.eval()(windows).logits
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert ours.std().item() > 0.1  # trained, not near-uniform: the match means something


def test_greedy_generate_through_both_caches_agrees(llama_run, exported):
    prompt, n = "def parse(self, text", 40
    ours = run_module("hvdlm.generate", "--run", llama_run, "--prompt", prompt, "--temperature",
                      "0", "--max-new-tokens", str(n), check=True).stdout
    tok = transformers.AutoTokenizer.from_pretrained(exported, local_files_only=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(exported, local_files_only=True)
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    out = hf.generate(ids, do_sample=False, max_new_tokens=n)[0, ids.shape[1]:]
    assert ours == prompt + tok.decode(out, skip_special_tokens=True) + "\n"


def test_export_then_init_from_then_export_gives_identical_tensors(
        llama_run, exported, bpe_dataset, tmp_path):
    # lr 1e-30: the one step it must take cannot move an fp32 weight, so any difference
    # would come from the mapping in and out.
    still = ["train.max_steps=1", "train.lr=1e-30", "train.min_lr=0", "train.warmup_steps=0"]
    run = tmp_path / "from_hf"
    run_module("hvdlm.train", "--data", bpe_dataset, "--out", run, *LLAMA, *still,
               f"train.init_from={exported}", check=True)
    run_module("hvdlm.export", "--run", run, "--out", tmp_path / "again", check=True)
    before = safetensors.load(exported / "model.safetensors")
    after = safetensors.load(tmp_path / "again" / "model.safetensors")
    assert before.keys() == after.keys() and "lm_head.weight" in before
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_init_from_a_folder_of_another_shape_is_one_line(exported, bpe_dataset, tmp_path):
    proc = run_module("hvdlm.train", "--data", bpe_dataset, "--out", tmp_path / "r", *LLAMA,
                      "model.n_kv_head=1", f"train.init_from={exported}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"train.init_from={exported}: model.n_kv_head is 2 there, 1 here" in proc.stderr
    gpt = ModelConfig(arch="gpt", n_layer=2, n_embd=32, n_head=4, seq_len=SEQ_LEN,
                      vocab_size=300, tie_embeddings=False)
    with pytest.raises(UsageError, match="model.arch is llama there, gpt here"):
        init_from.initial_weights(exported, gpt)


def test_tied_llama_maps_both_ways_and_defaults_compare_as_built():
    cfg = ModelConfig(arch="llama", n_layer=1, n_embd=16, n_head=2, seq_len=8, vocab_size=70)
    state = build_model(cfg).state_dict()
    config, tensors = llama_format.to_hf(cfg, state, eos_id=69)
    assert "lm_head.weight" not in tensors and config["tie_word_embeddings"] is True
    assert tensors["model.embed_tokens.weight"].shape == (70, 16)  # padding (128 rows) dropped
    shape = llama_format.hf_shape(config)
    assert (shape["n_kv_head"], shape["ffn_hidden"]) == (2, 64)  # cfg says 0 and 0: the same
    init_from._refuse_mismatch(Path("x"), {"arch": "llama", **shape}, cfg)  # no error
    back = llama_format.from_hf(cfg, tensors)
    assert torch.equal(back["head.weight"], tensors["model.embed_tokens.weight"])
    with pytest.raises(ValueError, match="rope_type 'llama3'"):
        llama_format.hf_shape({**config, "rope_parameters": {"rope_type": "llama3"}})
