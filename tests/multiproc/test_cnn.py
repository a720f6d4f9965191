"""The gated convolutional LM (model.arch=cnn) and the Llama (model.arch=llama, 4 query heads
sharing 2 key/value heads) under real Horovod ranks, each from one launch
(tests/multiproc/cnn_check.py): it learns on 2 ranks, resumes bitwise, and equals one rank with
twice the micro-batch; evaluate and generate (through its cache) work on the run.

    .venv/bin/python -m pytest tests/multiproc/test_cnn.py
"""
import json
import sys

import pytest
import torch

from hvdlm import evaluate, generate
from hvdlm.config import load_config
from hvdlm.models.cnn import ConvDecoder
from hvdlm.models.decoding import decoder_for
from hvdlm.models.llama import LlamaDecoder
from hvdlm.training.run import Run
from hvdlm.training.record.logs import read_metrics
from hvdlm.training.trainer import Trainer
from tests.conftest import horovodrun
from tests.multiproc.test_train import TINY, final_params, flat, losses
from tests.training.test_trainer_resume import WORLD

pytestmark = pytest.mark.horovod

STEPS, RESUME_AT = 40, 8
CNN = [*TINY, "model.arch=cnn", "model.kernel_size=3", "model.dilation_growth=2",
       f"train.max_steps={STEPS}", "train.eval_interval=20", f"train.ckpt_interval={RESUME_AT}",
       "train.keep_checkpoints=5", "train.eval_batches=4"]
LLAMA = [*TINY, "model.arch=llama", "model.n_head=4", "model.n_kv_head=2", *CNN[len(TINY) + 3:]]
ARCHES = {"cnn": (CNN, ConvDecoder), "llama": (LLAMA, LlamaDecoder)}  # overrides, its cache


@pytest.fixture
def one_thread():
    """One torch thread, as each of the 2 ranks has: on a busy machine a second one mostly
    waits (the in-process runs below took 5x longer with two at load 4)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=sorted(ARCHES))
def cnn_runs(request, byte_dataset, tmp_path_factory):
    """ROOT/whole: 2 ranks x 8 for 40 steps; ROOT/resumed: its step-8 checkpoint continued.
    ROOT's name is the arch."""
    root = tmp_path_factory.mktemp("runs") / request.param
    root.mkdir()
    horovodrun(2, sys.executable, "-m", "tests.multiproc.cnn_check", byte_dataset, root,
               RESUME_AT, *ARCHES[request.param][0], "train.micro_batch=8", timeout=240)
    return root


def test_cnn_learns_on_two_ranks_and_evaluates(cnn_runs, byte_dataset, capsys, one_thread):
    run = cnn_runs / "whole"
    seen = losses(run)
    assert len(seen) == STEPS
    # Bytes start near ln(257) = 5.55 nats (measured: 5.5 -> 3.4 in 40 steps).
    assert sum(seen[-5:]) / 5 < sum(seen[:5]) / 5 - 1.0, seen
    assert "world size 2" in (run / "log.txt").read_text()
    assert f"{cnn_runs.name}, " in (run / "log.txt").read_text()
    assert any("val_loss" in r for r in read_metrics(run))
    assert evaluate.main(["--run", str(run), "--data", str(byte_dataset), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"loss", "perplexity", "bits_per_byte", "accuracy", "tokens",
                           "checkpoint", "step"}  # evaluate names what it scored
    assert scores["loss"] < 4.0 and 0 < scores["accuracy"] < 1


def test_cnn_resume_on_two_ranks_is_bitwise_exact(cnn_runs):
    whole, resumed = cnn_runs / "whole", cnn_runs / "resumed"
    assert [r["resumed_from"] for r in read_metrics(resumed) if "resumed_from" in r] == [RESUME_AT]
    assert losses(resumed) == losses(whole)[RESUME_AT:]
    a, b = final_params(whole, STEPS), final_params(resumed, STEPS)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_two_ranks_equal_one_rank_with_twice_the_micro_batch(cnn_runs, byte_dataset, tmp_path,
                                                             own_signal_handlers, one_thread):
    one = tmp_path / "np1"
    one.mkdir()
    overrides = ARCHES[cnn_runs.name][0]
    cfg = load_config(None, [*overrides, "train.micro_batch=16", "train.eval_interval=1000"])
    assert Trainer(cfg, byte_dataset, one, WORLD, "never").run() == 0  # in this process
    two = cnn_runs / "whole"
    for a, b in zip(losses(one), losses(two), strict=True):
        assert abs(a - b) <= 1e-5 * a, (losses(one), losses(two))
    for step in (RESUME_AT, STEPS):
        x, y = flat(final_params(one, step)), flat(final_params(two, step))
        assert ((x - y).norm() / x.norm()).item() <= 1e-5, step


def test_generate_through_the_cache_equals_recomputing_the_window(cnn_runs, capsys, one_thread):
    run = cnn_runs / "whole"
    prompt, n = "def ", 80  # 80 new tokens: well past seq_len (32), where the window slides
    assert generate.main(["--run", str(run), "--prompt", prompt, "--max-new-tokens", str(n),
                          "--temperature", "0"]) == 0
    text = capsys.readouterr().out
    opened = Run.open(run)
    model, seq_len = opened.model, opened.config.model.seq_len
    assert isinstance(decoder_for(model, seq_len), ARCHES[cnn_runs.name][1])  # the cache
    ids = list(prompt.encode())  # the byte tokenizer: token id = byte
    with torch.no_grad():  # uncached greedy: the whole window again for every token
        for _ in range(n):
            token = int(model(torch.tensor([ids[-seq_len:]]))[0, -1].argmax())
            if token == 256:  # end-of-text
                break
            ids.append(token)
    assert text == bytes(ids).decode("utf-8", errors="replace") + "\n"
    assert len(text) > len(prompt) + 20
    # Along that text, the cache's logits are the window's (float32: to rounding).
    cached, start = decoder_for(model, seq_len), len(prompt)
    logits = cached.start(torch.tensor([ids[:start]]))[0]
    with torch.no_grad():
        for i in range(start, len(ids)):
            window = model(torch.tensor([ids[max(0, i - seq_len):i]]))[0, -1]
            assert torch.allclose(logits, window, rtol=1e-4, atol=1e-4), i
            logits = cached.push(torch.tensor([ids[i]]))[0]
