"""lm-evaluation-harness on hvdlm runs (hvdlm/eval_harness/), with the local tasks of
tests/data/lm_eval_tasks (no network): the harness's loglikelihood of each continuation is
hvdlm's own summed log-probability, rolling loglikelihood is hvdlm.evaluate's windows, a
multiple-choice task scores the same through `--model hvdlm` on a GPT run (the command line)
and `--model hf` on its export, and an LSTM run goes through all three kinds of request.

    .venv/bin/python -m pytest tests/test_lm_eval.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hvdlm.training.scoring import byte_lengths, score_windows
from tests.conftest import ROOT, TINY_RUN, run_module

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is in the eval and dev extras")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from hvdlm.eval_harness.model import HvdlmLM  # noqa: E402

TASKS = ROOT / "tests" / "data" / "lm_eval_tasks"
SEQ_LEN = 48
GPT = ["model.n_layer=2", "model.n_embd=32", "model.n_head=2", f"model.seq_len={SEQ_LEN}",
       "train.max_steps=30", "train.micro_batch=8", "train.warmup_steps=5",
       "train.eval_interval=30", "train.ckpt_interval=30"]
PAIRS = [("import json\nimport ", "sys"), ("def __init__(", "self, policy):"),
         ("x", " = 1"), ("", "import os"), ("# " + "long context " * 20, "and more")]


@pytest.fixture(scope="module")
def gpt_run(bpe_dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("lm_eval") / "gpt"
    run_module("hvdlm.train", "--data", bpe_dataset, "--out", run, *GPT, check=True, timeout=240)
    return run


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def own_logprob(lm: HvdlmLM, context: str, continuation: str) -> float:
    """hvdlm's model on the same tokens, one text at a time, no batching or padding: the
    continuation's tokens scored in the last window of seq_len + 1 tokens."""
    tok = lm.run.tokenizer
    kept = context.rstrip()  # the harness scores a context's trailing spaces as continuation
    context, continuation = kept, context[len(kept):] + continuation
    if context:
        whole, n = tok.encode(context + continuation), len(tok.encode(context))
    else:  # an empty context reads end-of-text, as the harness's hf model does
        whole, n = [tok.eos_id] + tok.encode(continuation), 1
    scored, window = len(whole) - n, whole[-(SEQ_LEN + 1):]
    with torch.no_grad():
        logprobs = F.log_softmax(lm.lm(torch.tensor([window[:-1]])).double(), -1)[0]
    return sum(logprobs[j - 1, window[j]].item() for j in range(len(window) - scored,
                                                                len(window)))


def test_loglikelihood_is_hvdlms_summed_log_probability(gpt_run):
    lm = HvdlmLM(run=str(gpt_run), batch_size=3)  # batches of unequal lengths: padding
    got = lm.loglikelihood(requests("loglikelihood", PAIRS))
    assert len(got) == len(PAIRS)
    for (context, continuation), (logprob, greedy) in zip(PAIRS, got):
        assert logprob < 0 and isinstance(greedy, bool)
        assert abs(logprob - own_logprob(lm, context, continuation)) <= 1e-5, context


def test_rolling_loglikelihood_is_hvdlm_evaluates_windows(gpt_run):
    lm = HvdlmLM(run=str(gpt_run), batch_size=2)
    tok = lm.run.tokenizer
    text = (TASKS / "local.py").read_text()
    ids = tok.encode(text)
    ids = ids[:3 * SEQ_LEN]  # whole windows: each of seq_len predictions, as evaluate's
    text = tok.decode(ids)
    assert tok.encode(text) == ids
    [rolling] = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [(text,)]))
    stream = torch.tensor([tok.eos_id] + ids)
    windows = [stream[i:i + SEQ_LEN + 1][None] for i in range(0, 3 * SEQ_LEN, SEQ_LEN)]
    scores = score_windows(lm.lm, windows, byte_lengths(tok), torch.device("cpu"))
    assert scores["tokens"] == len(ids)
    assert rolling == pytest.approx(-scores["loss"] * scores["tokens"], rel=1e-6)


def _choice_logprobs(samples: list[dict]) -> dict[int, list[float]]:
    """doc_id -> each choice's loglikelihood, from the harness's logged samples."""
    return {s["doc_id"]: [float(r[0]) for r in s["filtered_resps"]] for s in samples}


def test_multiple_choice_scores_the_same_through_hvdlm_and_hf_on_its_export(gpt_run, tmp_path):
    pytest.importorskip("transformers", reason="transformers is a dev dependency")
    out = tmp_path / "results"
    proc = run_module("hvdlm.eval_harness", "--model", "hvdlm", "--model_args",
                      f"run={gpt_run},device=cpu", "--tasks", "hvdlm_python_choice",
                      "--include_path", TASKS, "--batch_size", "4", "--output_path", out,
                      "--log_samples", env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
                      timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [saved] = out.rglob("results*.json")
    ours = json.loads(saved.read_text())["results"]["hvdlm_python_choice"]["acc,none"]
    [logged] = out.rglob("samples_hvdlm_python_choice*.jsonl")
    our_samples = [json.loads(line) for line in logged.read_text().splitlines()]
    export = tmp_path / "hf"
    run_module("hvdlm.export", "--run", gpt_run, "--out", export, check=True)
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={export},dtype=float32", device="cpu",
        tasks=["hvdlm_python_choice"], task_manager=TaskManager(include_path=str(TASKS)),
        batch_size=4, log_samples=True)
    assert ours == theirs["results"]["hvdlm_python_choice"]["acc,none"]
    a = _choice_logprobs(our_samples)
    b = _choice_logprobs(theirs["samples"]["hvdlm_python_choice"])
    assert a.keys() == b.keys() and len(a) == 12
    for doc in a:  # each choice scored alike, not only the same count of right answers
        assert a[doc] == pytest.approx(b[doc], abs=1e-4), doc


def test_an_lstm_run_goes_through_every_kind_of_request(byte_dataset, tmp_path):
    run = tmp_path / "lstm"
    run_module("hvdlm.train", "--data", byte_dataset, "--out", run, *TINY_RUN,
               "model.arch=lstm", check=True)
    results = lm_eval.simple_evaluate(
        model="hvdlm", model_args=f"run={run}", tasks=[
            "hvdlm_python_choice", "hvdlm_python_lines", "hvdlm_python_complete"],
        task_manager=TaskManager(include_path=str(TASKS)), batch_size=2)["results"]
    assert 0 <= results["hvdlm_python_choice"]["acc,none"] <= 1
    assert results["hvdlm_python_lines"]["bits_per_byte,none"] > 0
    assert 0 <= results["hvdlm_python_complete"]["exact_match,none"] <= 1
    lm = HvdlmLM(run=str(run))
    texts = lm.generate_until(requests("generate_until", [
        ("import", {"until": ["\n"], "max_gen_toks": 5}),
        ("def f", {"until": ["\n"], "max_gen_toks": 5}),
        ("import", {"until": ["\n"], "max_gen_toks": 5})]))
    assert texts[0] == texts[2] and all("\n" not in t and len(t) <= 5 for t in texts)
