"""Config: defaults < TOML < overrides; unknown keys and bad values are one-line UsageErrors;
every accepted value reads back from the file; each key's meaning is written once."""
import dataclasses
import re
from typing import get_type_hints

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hvdlm.train
import hvdlm.training.trainer
from hvdlm.config import tomllib  # tomli on Python 3.10
from hvdlm.config import Config, config_from_dict, load_config, to_toml
from hvdlm.config_reference import REGENERATE, reference
from hvdlm.errors import UsageError
from hvdlm.text.shards import load_manifest
from hvdlm.training.checkpoint import load_latest
from tests.conftest import ROOT, TINY_RUN


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


# ---- values: what each type takes, and what comes back out of the file ------------------------
ALL_FIELDS = [(section.name, f, get_type_hints(section.default_factory)[f.name])
              for section in dataclasses.fields(Config)
              for f in dataclasses.fields(section.default_factory)]
HOSTILE_TEXT = ["", " ", '"', "'", "\\", '\\"', '"""', "'''", "a\nb", "\r\n", "\t", "\x00",
                "\x1b[31m", "\x7f", "\x85", "\u2028", "\ufeff", "é", "日本語", "run 🚀", "👩‍👩‍👧",
                "[train]", "# no comment", "lr = 1", "a=b=c", " padded ", "C:\\new\\table"]
INT_EDGES = [0, 1, -1, 2**31, 2**53, 2**53 + 1, 2**63 - 1, -2**63]
FLOAT_EDGES = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 0.1, 1 / 3, 989e12,
               2.0**53, 1e300, 1.7976931348623157e308, -1.7976931348623157e308]


def any_value(f: dataclasses.Field, kind: type) -> st.SearchStrategy:
    """Every value a field accepts (a key with choices: its choices; validate() is not asked)."""
    if f.metadata.get("choices"):
        return st.sampled_from(f.metadata["choices"])
    return {bool: st.booleans(),
            int: st.integers(-2**63, 2**63 - 1) | st.sampled_from(INT_EDGES),
            float: st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(FLOAT_EDGES),
            str: st.text() | st.sampled_from(HOSTILE_TEXT)}[kind]


@st.composite
def any_config(draw) -> dict:
    data: dict = {}
    for section, f, kind in ALL_FIELDS:
        data.setdefault(section, {})[f.name] = draw(any_value(f, kind))
    return data


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=any_config())
def test_every_accepted_value_reads_back_from_the_file(data, tmp_path):
    """Hostile text (quotes, backslashes, newlines, control characters, unicode, emoji, empty)
    and boundary numbers in every field: RUN/config.toml, and --print-config's commented form,
    read back by tomllib to the very same values; the command-line spelling of each value is
    taken as the same value too."""
    cfg = config_from_dict(data)
    assert cfg.to_dict() == data
    path = tmp_path / "config.toml"
    for comments in (False, True):
        path.write_bytes(to_toml(cfg, comments=comments).encode("utf-8"))  # as the run writes it
        back = tomllib.loads(path.read_bytes().decode("utf-8"))
        assert back == data
        assert all(repr(back[s][k]) == repr(v) for s in data for k, v in data[s].items())  # -0.0
    spelled = {s: {k: v if isinstance(v, str) else repr(v) for k, v in t.items()}
               for s, t in data.items()}
    assert config_from_dict(spelled).to_dict() == data


def test_a_valid_hostile_config_loads_back_as_a_whole(tmp_path):
    """The same through load_config (validated): the string keys that take any text."""
    for text in HOSTILE_TEXT:
        cfg = load_config(None, [f"train.wandb_name={text}", f"train.init_from={text}",
                                 "train.peak_flops=5e-324", f"train.seed={2**63 - 1}"])
        path = tmp_path / "config.toml"
        path.write_bytes(to_toml(cfg).encode())
        assert load_config(path) == cfg


INT_KEYS = [f"{s}.{f.name}" for s, f, kind in ALL_FIELDS if kind is int]
FLOAT_KEYS = [f"{s}.{f.name}" for s, f, kind in ALL_FIELDS if kind is float]


@pytest.mark.parametrize("value, expected", [
    ("2.5", "int"), ("2.5e0", "int"), ("1e-3", "int"), ("nan", "int"), ("inf", "int"),
    ("true", "int"), ("", "int"), (str(2**63), "int within 64 bits"), ("1e30", "int within 64 bits")])
def test_an_int_key_refuses_what_is_not_a_whole_number(value, expected):
    for key in INT_KEYS:
        with pytest.raises(UsageError) as err:
            load_config(None, [f"{key}={value}"])
        assert str(err.value) == f"config key {key}: expected {expected}, got {value!r}"


def test_an_int_key_takes_exactly_whole_numbers_in_any_spelling(tmp_path):
    cfg = load_config(None, ["train.max_steps=1e3", "train.log_interval=2.0",
                             f"train.seed={2**53 + 1}"])
    assert (cfg.train.max_steps, cfg.train.log_interval, cfg.train.seed) == (1000, 2, 2**53 + 1)
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\nmax_steps = 1e3\n")
    assert load_config(toml).train.max_steps == 1000
    toml.write_text("[train]\nmax_steps = 2.5\n")
    with pytest.raises(UsageError, match="config key train.max_steps: expected int, got 2.5"):
        load_config(toml)


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_a_float_key_refuses_non_finite_numbers(key, tmp_path):
    for value in ["nan", "inf", "-inf", "1e999", "-NaN", "infinity"]:
        with pytest.raises(UsageError) as err:
            load_config(None, [f"{key}={value}"])
        assert str(err.value) == f"config key {key}: expected a finite float, got {value!r}"
    section, name = key.split(".")
    toml = tmp_path / "run.toml"
    for literal in ("nan", "-inf"):  # TOML spells both
        toml.write_text(f"[{section}]\n{name} = {literal}\n")
        with pytest.raises(UsageError, match=f"config key {key}: expected a finite float"):
            load_config(toml)


def test_keys_with_choices_name_them_and_take_toml_booleans(tmp_path):
    for key, words in [("train.precision=fp8", "fp32, bf16, fp16"),
                       ("train.compile=maybe", "auto, true, false")]:
        with pytest.raises(UsageError, match=f"config key {key.split('=')[0]} must be one of "
                                             f"{words}"):
            load_config(None, [key])
    assert load_config(None, ["train.precision=fp16"]).train.precision == "fp16"
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\ncompile = false\n")
    assert load_config(toml).train.compile == "false"
    with pytest.raises(UsageError, match="UTF-8"):
        load_config(None, ["train.wandb_name=\udcff"])  # undecodable bytes in argv


# ---- each key's meaning: written once, on the field -------------------------------------------
def test_every_key_has_its_meaning_on_its_field():
    for section, f, kind in ALL_FIELDS:
        assert f.metadata.get("doc"), f"{section}.{f.name}: declare it with setting(default, doc)"
        assert all(isinstance(c, str) for c in f.metadata["choices"])


def test_docs_configuration_md_is_generated_from_the_fields():
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == reference(), f"docs/configuration.md is stale; regenerate: {REGENERATE}"
    for section, f, kind in ALL_FIELDS:
        assert f"| `{section}.{f.name}` |" in committed


# ---- environment variables: only where a key or flag cannot reach, each listed once -----------
def hvdlm_variables_read() -> set[str]:
    """HVDLM_* names in the code (package, batch and set-up scripts, benchmarks, test harness);
    the tests' own files are left out (they set these, and misspell them on purpose)."""
    files = [p for folder in ("hvdlm", "slurm", "scripts", "benchmarks", "tests/infra")
             for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".sh", ".sbatch")]
    files += [ROOT / "tests" / "conftest.py", ROOT / "Makefile"]
    return {name for path in files if path.is_file()
            for name in re.findall(r"\bHVDLM_[A-Z0-9]+(?:_[A-Z0-9]+)*", path.read_text())}


def test_docs_environment_md_lists_every_variable_the_code_reads():
    doc = (ROOT / "docs" / "environment.md").read_text(encoding="utf-8")
    read = hvdlm_variables_read()
    assert read, "no HVDLM_* variable found: the scan is broken"
    missing = sorted(name for name in read if name not in doc)
    assert not missing, f"read by the code, not in docs/environment.md: {missing}"
    listed = set(re.findall(r"^\| `(HVDLM_[A-Z0-9_]+)` \|", doc, flags=re.M))
    assert listed <= read, f"listed but no longer read: {sorted(listed - read)}"
