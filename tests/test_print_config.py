"""configs/ and `python -m hvdlm.train --print-config`: the resolved config, the parameter
count and the memory estimate, without Horovod and without a run."""
from __future__ import annotations

import dataclasses

import pytest

from hvdlm.config import Config, load_config, meaning, tomllib
from hvdlm.models import build_model, count_parameters
from hvdlm.training import estimate
from tests.conftest import ROOT, run_module

CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


def print_config(*args: str):
    return run_module("hvdlm.train", "--print-config", *args, timeout=120)


def test_the_example_configs_exist_and_resolve():
    assert {p.name for p in CONFIGS} >= {"gpt2-124m.toml", "lstm-seed.toml", "tiny-cpu.toml"}
    for path in CONFIGS:
        proc = print_config("--config", path, "--ranks", "8")
        assert proc.returncode == 0, (path, proc.stderr)


def test_gpt2_124m_has_gpt2_smalls_parameters_and_keeps_its_batch_on_any_world_size():
    for ranks, passes in (("1", 32), ("8", 4), ("32", 1)):
        proc = print_config("--config", ROOT / "configs" / "gpt2-124m.toml", "--ranks", ranks)
        assert proc.returncode == 0, proc.stderr
        # GPT-2 small (Hugging Face's gpt2): 124,439,808 with the embeddings tied
        assert "# gpt: 124,439,808 parameters" in proc.stdout
        toml = tomllib.loads(proc.stdout)  # the comment lines are TOML comments
        assert toml["train"]["grad_accum"] == passes
        assert f"16 x {passes} passes x {ranks} ranks = 512 windows" in proc.stdout
    proc = print_config("--config", ROOT / "configs" / "gpt2-124m.toml", "--ranks", "3")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "hvdlm.train: error: config key train.global_batch (512) is not a multiple of "
        "train.micro_batch x ranks (16 x 3 = 48); change one of them")


def test_vocabulary_from_the_dataset_and_the_count_of_the_real_model(byte_dataset):
    proc = print_config("--config", ROOT / "configs" / "tiny-cpu.toml", "--data", byte_dataset)
    assert proc.returncode == 0, proc.stderr
    cfg = load_config(ROOT / "configs" / "tiny-cpu.toml")
    cfg.model.vocab_size = 257  # the byte dataset: 256 bytes + end-of-text
    real = count_parameters(build_model(cfg.model))
    assert f"# gpt: {real:,} parameters (vocabulary 257, from {byte_dataset})" in proc.stdout


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_memory_estimate_parts(arch):
    cfg = load_config(None, [f"model.arch={arch}", "model.vocab_size=1000"])
    e = estimate.estimate(cfg)
    assert (e.weights, e.gradients, e.optimizer) == (4 * e.parameters, 4 * e.parameters,
                                                    8 * e.parameters)
    bigger = load_config(None, [f"model.arch={arch}", "model.vocab_size=1000",
                                f"train.micro_batch={2 * cfg.train.micro_batch}"])
    assert estimate.activation_bytes(bigger) == pytest.approx(2 * e.activations, rel=1e-6)
    if arch == "gpt":
        half = load_config(None, ["model.vocab_size=1000", "train.precision=bf16"])
        assert estimate.activation_bytes(half) < e.activations


def test_each_key_is_printed_under_its_meaning():
    """--print-config's comments are the fields' docs (hvdlm/config.py), wrapped, choices
    included; the values below them are the resolved ones, hostile text too."""
    name = 'run "🚀" \\ \x1b'
    proc = print_config(f"train.wandb_name={name}", "train.precision=bf16")
    assert proc.returncode == 0, proc.stderr
    assert tomllib.loads(proc.stdout)["train"]["wandb_name"] == name
    lines = proc.stdout.splitlines()
    for section in dataclasses.fields(Config):
        start = lines.index(f"[{section.name}]")
        for f in dataclasses.fields(section.default_factory):
            at = next(i for i in range(start, len(lines)) if lines[i].startswith(f"{f.name} = "))
            comments = []
            while lines[at - 1 - len(comments)].startswith("# "):
                comments.insert(0, lines[at - 1 - len(comments)][2:])
            assert " ".join(comments) == meaning(f), f.name
            assert f.metadata["doc"].split()[0] in comments[0]
    assert 'precision = "bf16"' in lines


def test_training_still_needs_data_and_out():
    proc = run_module("hvdlm.train", "--out", "r", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("hvdlm.train: error: the following arguments are required: "
                                   "--data (see --help)")
