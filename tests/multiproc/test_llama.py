"""The Llama-style model (model.arch=llama, grouped-query attention) under real Horovod ranks,
both runs from one launch (tests/multiproc/cnn_check.py): it learns on 2 ranks, resumes
bitwise, and equals one rank with twice the micro-batch; evaluate and generate work on the run.

    .venv/bin/python -m pytest tests/multiproc/test_llama.py
"""
import json
import sys

import pytest
import torch

from hvdlm import evaluate, generate
from hvdlm.config import load_config
from hvdlm.models.decoding import decoder_for
from hvdlm.models.llama import LlamaDecoder
from hvdlm.training.record.logs import read_metrics
from hvdlm.training.run import Run
from hvdlm.training.trainer import Trainer
from tests.conftest import horovodrun
from tests.multiproc.test_cnn import one_thread  # noqa: F401 (a fixture)
from tests.multiproc.test_train import TINY, final_params, flat, losses
from tests.training.test_trainer_resume import WORLD

pytestmark = pytest.mark.horovod

STEPS, RESUME_AT = 16, 8
LLAMA = [*TINY, "model.arch=llama", "model.n_head=4", "model.n_kv_head=2",
         f"train.max_steps={STEPS}", "train.eval_interval=16", f"train.ckpt_interval={RESUME_AT}",
         "train.keep_checkpoints=5", "train.eval_batches=2"]


@pytest.fixture(scope="module")
def llama_runs(byte_dataset, tmp_path_factory):
    """ROOT/whole: 2 ranks x 8 for 16 steps; ROOT/resumed: its step-8 checkpoint continued."""
    root = tmp_path_factory.mktemp("llama")
    horovodrun(2, sys.executable, "-m", "tests.multiproc.cnn_check", byte_dataset, root,
               RESUME_AT, *LLAMA, "train.micro_batch=8", timeout=240)
    return root


def test_llama_learns_on_two_ranks_evaluates_and_generates(llama_runs, byte_dataset, capsys,
                                                          one_thread):
    run = llama_runs / "whole"
    seen = losses(run)
    assert len(seen) == STEPS and sum(seen[-3:]) / 3 < sum(seen[:3]) / 3 - 0.5, seen
    log = (run / "log.txt").read_text()
    assert "world size 2" in log and "llama, " in log
    assert evaluate.main(["--run", str(run), "--data", str(byte_dataset)]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["loss"] < 4.5 and 0 < scores["accuracy"] < 1
    assert generate.main(["--run", str(run), "--prompt", "def ", "--max-new-tokens", "40",
                          "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("def ")
    assert isinstance(decoder_for(Run.open(run).model, 32), LlamaDecoder)


def test_llama_resume_on_two_ranks_is_bitwise_exact(llama_runs):
    whole, resumed = llama_runs / "whole", llama_runs / "resumed"
    assert [r["resumed_from"] for r in read_metrics(resumed) if "resumed_from" in r] == [RESUME_AT]
    assert losses(resumed) == losses(whole)[RESUME_AT:]
    a, b = final_params(whole, STEPS), final_params(resumed, STEPS)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_llama_on_two_ranks_equals_one_rank_with_twice_the_micro_batch(
        llama_runs, byte_dataset, tmp_path, own_signal_handlers, one_thread):
    one = tmp_path / "np1"
    one.mkdir()
    cfg = load_config(None, [*LLAMA, "train.micro_batch=16", "train.eval_interval=1000"])
    assert Trainer(cfg, byte_dataset, one, WORLD, "never").run() == 0  # in this process
    two = llama_runs / "whole"
    for a, b in zip(losses(one), losses(two), strict=True):
        assert abs(a - b) <= 1e-5 * a, (losses(one), losses(two))
    for step in (RESUME_AT, STEPS):
        x, y = flat(final_params(one, step)), flat(final_params(two, step))
        assert ((x - y).norm() / x.norm()).item() <= 1e-5, step
