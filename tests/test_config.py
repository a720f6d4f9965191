"""Config: defaults < TOML < overrides; unknown keys and bad values are one-line UsageErrors."""
import pytest

import hvdlm.train
import hvdlm.training.trainer
from hvdlm.config import tomllib  # tomli on Python 3.10
from hvdlm.config import Config, config_from_dict, load_config, to_toml
from hvdlm.errors import UsageError
from hvdlm.text.shards import load_manifest
from hvdlm.training.checkpoint import load_latest
from tests.conftest import TINY_RUN


def test_precedence_toml_then_overrides(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\narch = "lstm"\nn_layer = 3\n[train]\nlr = 1e-3\n')
    cfg = load_config(toml, ["model.n_layer=5", "train.fp16_allreduce=true"])
    assert (cfg.model.arch, cfg.model.n_layer, cfg.train.lr) == ("lstm", 5, 1e-3)
    assert cfg.train.fp16_allreduce is True


def test_resolved_toml_round_trips(tmp_path):
    cfg = load_config(None, ["model.dropout=0.1", "train.max_steps=7"])
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path).to_dict() == cfg.to_dict()
    assert config_from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("override, words", [
    ("train.lrr=1", ["train.lrr", "train.lr"]),
    ("modle.n_layer=2", ["modle.n_layer", "model.n_layer"]),
    ("train.max_steps=ten", ["train.max_steps", "int"]),
    ("train.max_steps=-1", ["train.max_steps", ">= 1"]),
    ("train.micro_batch=0", ["train.micro_batch"]),
    ("model.n_embd=30", ["model.n_embd", "model.n_head"]),
    ("model.arch=transformer", ["model.arch", "gpt"]),
    ("train.precision=fp8", ["train.precision"]),
    ("nonsense", ["section.key=value"]),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(UsageError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_bad_toml_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(UsageError, match="bad.toml"):
        load_config(bad)
    with pytest.raises(UsageError, match="missing.toml"):
        load_config(tmp_path / "missing.toml")
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text('[train]\nlr = "fast"\n')
    with pytest.raises(UsageError, match="train.lr"):
        load_config(wrong_type)


def test_run_config_toml_is_the_config_the_run_used(tiny_run, byte_dataset):
    """The tiny run was started with TINY_RUN's overrides: RUN/config.toml, parsed back, holds
    them over the defaults, with the vocabulary size the dataset gave; so does the checkpoint."""
    expected = load_config(None, TINY_RUN).to_dict()
    expected["model"]["vocab_size"] = load_manifest(byte_dataset).vocab_size
    assert expected["model"]["n_layer"] == 1 != Config().model.n_layer  # overrides, not defaults
    assert tomllib.loads((tiny_run / "config.toml").read_text()) == expected
    assert load_latest(tiny_run)[1].config == expected


def test_train_command_resolves_file_then_overrides(tmp_path, monkeypatch):
    """`python -m hvdlm.train --config FILE key=value`: the config handed to training."""
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\nn_layer = 3\nn_embd = 24\n[train]\nlr = 1e-3\n')
    handed = {}
    monkeypatch.setattr(hvdlm.training.trainer, "train",
                        lambda cfg, data, out, resume, callbacks: handed.update(cfg=cfg) or 0)
    assert hvdlm.train.main(["--data", "D", "--out", "R", "--config", str(toml),
                             "model.n_layer=2", "train.max_steps=7"]) == 0
    expected = Config()
    expected.model.n_layer, expected.model.n_embd = 2, 24  # the override beats the file
    expected.train.lr, expected.train.max_steps = 1e-3, 7
    assert handed["cfg"] == expected
