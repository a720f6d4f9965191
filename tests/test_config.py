"""Config: defaults < TOML < overrides; unknown keys and bad values are one-line UsageErrors."""
import pytest

from hvdlm.config import config_from_dict, load_config, to_toml
from hvdlm.errors import UsageError


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
