"""Bad input everywhere: one line naming what is wrong, exit 2 for usage and 1 for failures,
no traceback, nothing half-written. The table below is the list of cases."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvdlm import preprocess, verify
from tests.conftest import run_module

# (command, arguments, exit status, words the one line must contain). DATA / RUN / TMP are
# replaced by a real dataset, a run folder that will not be created, and a scratch folder.
CASES = [
    ("train", ["--data", "DATA", "--out", "RUN", "--bogus"], 2, ["--bogus"]),
    ("train", ["--data", "DATA"], 2, ["--out"]),
    ("train", ["--data", "DATA", "--out", "RUN", "train.lrr=1"], 2, ["train.lrr", "train.lr"]),
    ("train", ["--data", "DATA", "--out", "RUN", "train.max_steps=-5"], 2, ["train.max_steps"]),
    ("train", ["--data", "DATA", "--out", "RUN", "train.max_steps=many"], 2, ["train.max_steps", "int"]),
    ("train", ["--data", "DATA", "--out", "RUN", "train.micro_batch=0"], 2, ["train.micro_batch"]),
    ("train", ["--data", "DATA", "--out", "RUN", "train.max_steps=2.5"], 2,
     ["hvdlm.train: error: config key train.max_steps: expected int, got '2.5'"]),
    ("train", ["--data", "DATA", "--out", "RUN", "train.max_steps=2.5e0"], 2,
     ["config key train.max_steps: expected int, got '2.5e0'"]),
    ("train", ["--data", "DATA", "--out", "RUN", "train.lr=nan"], 2,
     ["config key train.lr: expected a finite float, got 'nan'"]),
    ("train", ["--data", "DATA", "--out", "RUN", "train.peak_flops=inf"], 2,
     ["config key train.peak_flops: expected a finite float, got 'inf'"]),
    ("train", ["--data", "DATA", "--out", "RUN", "train.compile=maybe"], 2,
     ["train.compile", "auto, true, false"]),
    ("train", ["--data", "DATA", "--out", "RUN", "model.n_embd=30", "model.n_head=4"], 2,
     ["model.n_embd", "model.n_head"]),
    ("train", ["--data", "DATA", "--out", "RUN", "model.seq_len=100000000"], 2, ["model.seq_len"]),
    ("train", ["--data", "TMP/nowhere", "--out", "RUN"], 1, ["nowhere"]),
    ("train", ["--data", "DATA", "--out", "RUN", "--config", "TMP/missing.toml"], 2, ["missing.toml"]),
    ("train", ["--data", "DATA", "--out", "RUN", "--resume", "TMP/none.pt"], 1, ["none.pt"]),
    ("evaluate", ["--run", "TMP/norun", "--data", "DATA"], 1, ["norun"]),
    ("evaluate", ["--run", "RUN", "--data", "DATA", "--batch-size", "0"], 2, ["--batch-size"]),
    ("evaluate", ["--data", "DATA"], 2, ["--run"]),
    ("generate", ["--run", "TMP/norun", "--prompt", "x"], 1, ["norun"]),
    ("generate", ["--run", "RUN", "--prompt", "x", "--max-new-tokens", "-1"], 2, ["--max-new-tokens"]),
    ("verify", ["TMP/nowhere"], 1, ["nowhere"]),
    ("preprocess", ["TMP/nowhere", "--out", "TMP/out"], 1, ["nowhere"]),
    ("preprocess", ["DATA", "--out", "TMP/out", "--vocab-size", "banana"], 2, ["--vocab-size"]),
]


@pytest.mark.parametrize("command, args, status, words", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_table(command, args, status, words, byte_dataset, tmp_path):
    run = tmp_path / "run"
    subst = {"DATA": str(byte_dataset), "RUN": str(run)}
    argv = [subst.get(a, a.replace("TMP", str(tmp_path))) for a in args]
    proc = run_module(f"hvdlm.{command}", *argv, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == status, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not run.exists(), "a failed command left a run folder behind"
    assert not (tmp_path / "out").exists(), "a failed command left a dataset behind"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.binary(min_size=0, max_size=400), min_size=1, max_size=4))
def test_garbage_bytes_as_corpus(files, tmp_path_factory, capsys):
    """Arbitrary bytes in .txt/.jsonl/.gz files: a verified dataset, or one clear line."""
    root = tmp_path_factory.mktemp("garbage")
    corpus = root / "corpus"
    corpus.mkdir()
    for i, blob in enumerate(files):
        (corpus / f"{i}.{('txt', 'jsonl', 'txt.gz', 'md')[i % 4]}").write_bytes(blob)
    status = preprocess.main([str(corpus), "--out", str(root / "out"), "--tokenizer", "byte",
                              "--val-fraction", "0"])
    err = capsys.readouterr().err
    if status == 0:
        assert verify.main([str(root / "out")]) == 0
    else:
        assert status == 1, err
        assert "Traceback" not in err
        assert not (root / "out").exists()
