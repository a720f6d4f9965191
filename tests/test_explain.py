"""python -m hvdlm.explain and the numbers behind it (hvdlm/explain/): each number is
checked against an independent computation, not just drawn; the page renders in Debian's
headless Chromium with no console message and no request leaving the page.

    .venv/bin/python -m pytest tests/test_explain.py
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hvdlm.config import ARCHES, Config
from hvdlm.errors import UsageError
from hvdlm.evaluate import main as evaluate_main
from hvdlm.explain.command import main as explain_main
from hvdlm.explain import attribution, recurrent, scores, transformer
from hvdlm.explain.report import Explainer, Options
from hvdlm.models import build_model
from hvdlm.models.rnn import CELLS
from hvdlm.text.tokenizer import build_byte_tokenizer, hf_to_json_bytes, load_tokenizer
from hvdlm.training import checkpoint
from hvdlm.training.run import Run
from tests.conftest import ROOT
from tests.conftest import TINY_SEQ_LEN as SEQ_LEN

TEXT = ("def parse(self, text):\n    \"\"\"Split a line into key and value.\"\"\"\n"
        "    key, _, value = text.partition('=')\n    return key.strip(), value.strip()\n")
SECTIONS = ("surprisal", "attention", "logit-lens", "attribution", "recurrent")


def explain(*args: object) -> int:
    """The command in this process: its exit status (argparse's usage errors exit)."""
    try:
        return explain_main([str(a) for a in args])
    except SystemExit as stop:
        return stop.code


def read(out: Path) -> tuple[dict, str]:
    return json.loads((out / "explain.json").read_text()), (out / "index.html").read_text()


def tiny(arch: str = "gpt", seed: int = 0, **shape) -> torch.nn.Module:
    cfg = Config().model
    cfg.arch, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.seq_len, cfg.vocab_size = \
        arch, 2, 2, 12, 16, 40
    for key, value in shape.items():
        setattr(cfg, key, value)
    torch.manual_seed(seed)
    return build_model(cfg).eval()


@pytest.fixture(scope="module")
def data_report(tiny_run, byte_dataset, tmp_path_factory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("explain") / "report"
    assert explain("--run", tiny_run, "--data", byte_dataset, "--split", "val",
                   "--documents", "1", "--integrated-gradients", "--out", out) == 0
    return (out, *read(out))


def test_split_scores_are_evaluates(data_report, tiny_run, byte_dataset, capsys):
    _, report, _ = data_report
    capsys.readouterr()
    assert evaluate_main(["--run", str(tiny_run), "--data", str(byte_dataset), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    ds = report["dataset"]
    assert ds["scores"]["tokens"] == evaluated["tokens"] == ds["windows"] * SEQ_LEN
    for key in ("loss", "perplexity", "bits_per_byte", "accuracy"):
        assert ds["scores"][key] == pytest.approx(evaluated[key], rel=1e-9), key
    # The pictures' numbers add up to the same tokens and loss.
    assert sum(ds["histogram_bits"]["count"]) == evaluated["tokens"]
    cal = ds["calibration"]
    assert sum(cal["count"]) == evaluated["tokens"]
    assert sum(n * acc for n, acc in zip(cal["count"], cal["accuracy"]) if n) == pytest.approx(
        evaluated["accuracy"] * evaluated["tokens"])
    assert cal["ece"] == pytest.approx(sum(n * abs(a - c) for n, a, c in zip(
        cal["count"], cal["accuracy"], cal["confidence"]) if n) / evaluated["tokens"])
    by_position = ds["loss_by_position_bits"]
    assert len(by_position) == SEQ_LEN
    assert sum(by_position) / SEQ_LEN == pytest.approx(evaluated["loss"] / math.log(2), rel=1e-5)
    assert ds["hardest"][0]["loss"] >= ds["easiest"][0]["loss"]


def test_calibration_by_hand():
    confidence = torch.tensor([0.05, 0.15, 0.95, 0.95, 1.0]).numpy()
    correct = torch.tensor([False, True, True, False, True]).numpy()
    cal = scores.calibration(confidence, correct, bins=10)
    assert cal["count"] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2 + 1]
    # |0 - .05| + |1 - .15| + |2 - 2.9| over 5 tokens
    assert cal["ece"] == pytest.approx((0.05 + 0.85 + 0.9) / 5)


def test_text_scores_recomputed_by_hand(tiny_run, tmp_path):
    out = tmp_path / "r"
    assert explain("--run", tiny_run, "--text", TEXT, "--out", out) == 0
    report, page = read(out)
    text = report["texts"][0]
    ids = list(TEXT.encode())                     # the byte tokenizer: ids are the bytes
    assert text["ids"] == ids and len(ids) > 3 * SEQ_LEN
    model = Run.open(tiny_run).model
    nll, top = [], []
    with torch.no_grad():
        for start in range(0, len(ids) - 1, SEQ_LEN):   # evaluate's cut, the last one shorter
            window = torch.tensor([ids[start:start + SEQ_LEN + 1]])
            log_p = torch.log_softmax(model(window[:, :-1]).double(), -1)[0]
            nll += (-log_p.gather(-1, window[0, 1:, None])[:, 0]).tolist()
            top += log_p.topk(5, -1).indices.tolist()
    assert text["windows"][-1] == [len(ids) // SEQ_LEN * SEQ_LEN, len(ids)]
    assert text["scores"]["tokens"] == len(nll) == len(ids) - 1
    assert text["scores"]["loss"] == pytest.approx(sum(nll) / len(nll), rel=1e-5)
    assert text["scores"]["bits_per_byte"] == pytest.approx(sum(nll) / math.log(2) / len(nll),
                                                            rel=1e-5)
    assert text["surprisal_bits"] == pytest.approx([v / math.log(2) for v in nll], abs=1e-4)
    assert text["top_ids"] == top
    worst = max(range(len(nll)), key=nll.__getitem__) + 1
    assert text["focus"] == {"position": worst, "chosen": "most surprising",
                             "window": [(worst - 1) // SEQ_LEN * SEQ_LEN,
                                        min((worst - 1) // SEQ_LEN * SEQ_LEN + SEQ_LEN + 1,
                                            len(ids))]}
    n_windows = math.ceil((len(ids) - 1) / SEQ_LEN)
    assert len(text["windows"]) == n_windows > 1
    assert f"more than the model reads at once: scored in {n_windows} windows" in page
    assert all(f'id={name}-0 ' in page for name in SECTIONS)


def test_attention_rows_sum_to_one_and_reproduce_the_fused_kernel():
    model = tiny(n_embd=16, n_head=4)
    idx = torch.randint(0, 40, (1, 13))
    trace = transformer.trace(model, idx)
    assert trace.fused_error < 1e-6 and len(trace.attention) == 2
    for block, residual, weights in zip(model.blocks, trace.residuals, trace.attention):
        assert weights.shape == (4, 13, 13)
        assert torch.allclose(weights.sum(-1), torch.ones(4, 13), atol=1e-6)
        assert (weights.triu(1) == 0).all()                       # causal
        x = block.ln1(residual)                                   # what the block attends with
        q, k, v = (t.view(1, 13, 4, 4).transpose(1, 2) for t in block.attn.qkv(x).split(16, 2))
        fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)[0]
        assert torch.allclose(weights @ v[0], fused, atol=1e-6)


def test_head_summaries_of_known_patterns():
    T = 6
    previous = torch.zeros(1, T, T)
    previous[0, 0, 0] = 1
    previous[0, torch.arange(1, T), torch.arange(T - 1)] = 1
    uniform = torch.ones(T, T).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True))[None]
    s = transformer.head_summaries(torch.cat([previous, uniform]))
    assert s["distance"] == pytest.approx([1.0, sum(i / 2 for i in range(1, T)) / (T - 1)])
    assert s["previous"] == pytest.approx([1.0, sum(1 / (i + 1) for i in range(1, T)) / (T - 1)])
    assert s["first"] == pytest.approx([1 / (T - 1),
                                        sum(1 / (i + 1) for i in range(1, T)) / (T - 1)])
    assert s["entropy_bits"] == pytest.approx(
        [0.0, sum(math.log2(i + 1) for i in range(1, T)) / (T - 1)], abs=1e-6)


def test_logit_lens_last_layer_is_the_models_logits(data_report):
    model = tiny()
    idx = torch.randint(0, 40, (1, 11))
    trace = transformer.trace(model, idx)
    with torch.no_grad():
        logits = model(idx)
        first = model.head(model.ln_f(model.wte(idx) + model.wpe(torch.arange(11))))
        assert torch.allclose(transformer.lens_logits(model, trace.residuals[-1]), logits,
                              atol=1e-6)
        assert torch.allclose(transformer.lens_logits(model, trace.residuals[0]), first,
                              atol=1e-6)
    targets = torch.randint(0, 40, (11,))
    lens = transformer.logit_lens(model, trace.residuals, targets, trace.logits)
    assert len(lens["true_p"]) == 3 and lens["last_layer_max_error"] < 1e-6
    assert lens["true_p"][-1] == pytest.approx(
        logits[0].softmax(-1).gather(-1, targets[:, None])[:, 0].tolist(), abs=1e-6)
    assert lens["top_ids"][-1] == logits[0].argmax(-1).tolist()
    checks = data_report[1]["texts"][0]["attention"]["checks"]
    assert checks["lens_last_layer_max_error"] < 1e-6 and checks["fused_max_error"] < 1e-5


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_gradient_x_input_matches_finite_differences(arch):
    model = tiny(arch).double()
    idx, position, h = torch.randint(0, 40, (1, 10)), 7, 1e-5
    attributions, f = attribution.gradient_x_input(model, idx, position)
    with torch.no_grad():
        direct = torch.log_softmax(model(idx[:, :position])[0, -1], -1)[idx[0, position]]
        assert f == pytest.approx(float(direct), abs=1e-12)
        e = attribution.context_embeddings(model, idx, position)
        for i in range(position):           # d f(e with e_i scaled by s) / ds at s = 1
            up, down = e.clone(), e.clone()
            up[0, i] *= 1 + h
            down[0, i] *= 1 - h
            fd = (attribution.target_logprob(model, idx, position, up)
                  - attribution.target_logprob(model, idx, position, down)) / (2 * h)
            assert float(attributions[i]) == pytest.approx(float(fd), rel=1e-6, abs=1e-10)


def test_integrated_gradients_are_complete(data_report):
    ig = data_report[1]["texts"][0]["attribution"]["integrated_gradients"]
    delta = ig["f_input"] - ig["f_baseline"]
    assert abs(sum(ig["attributions"]) - delta) <= 0.01 * abs(delta)
    assert ig["f_input"] == pytest.approx(data_report[1]["texts"][0]["attribution"]["logprob"],
                                          abs=1e-5)
    model = tiny("gru").double()            # and on another architecture, by hand
    idx = torch.randint(0, 40, (1, 9))
    ig = attribution.integrated_gradients(model, idx, 8, steps=64)
    zero = torch.zeros(1, 8, 12, dtype=torch.float64)
    with torch.no_grad():
        f0 = attribution.target_logprob(model, idx, 8, zero)
    assert ig["f_baseline"] == pytest.approx(float(f0))
    assert ig["completeness_gap"] < 0.01
    assert float(ig["attributions"].sum()) == pytest.approx(ig["f_input"] - ig["f_baseline"],
                                                            rel=0.01)


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
def test_gates_recomputed_from_the_weights_give_torchs_outputs(arch):
    model = tiny(arch)
    idx = torch.randint(0, 40, (1, 9))
    layers, error = recurrent.recompute(model, idx)
    with torch.no_grad():
        x = model.embed(idx)
        out, state = model.rnn(x)
    h_n, c_n = state if arch == "lstm" else (state, None)
    assert error < 1e-5 and len(layers) == 2
    assert torch.allclose(layers[-1].hidden, out[0], atol=1e-6)
    for k, layer in enumerate(layers):
        assert torch.allclose(layer.hidden[-1], h_n[k, 0], atol=1e-6)
        if c_n is not None:
            assert torch.allclose(layer.cell[-1], c_n[k, 0], atol=1e-6)
    if arch == "lstm":   # at t = 0 (zero state) the forget gate is sigmoid of input terms only
        rnn = model.rnn
        w, b = rnn.weight_ih_l0[12:24], rnn.bias_ih_l0[12:24] + rnn.bias_hh_l0[12:24]
        assert torch.allclose(layers[0].gates["forget"][0], torch.sigmoid(w @ x[0, 0] + b),
                              atol=1e-6)
    assert list(layers[0].gates) == list(recurrent.GATES[type(model.rnn)])


def _hand_made_run(tmp_path: Path, arch: str) -> Path:
    """A run folder holding an untrained model of `arch` and the byte tokenizer: no training."""
    tokenizer_file = tmp_path / "tokenizer.json"
    tokenizer_file.write_bytes(hf_to_json_bytes(build_byte_tokenizer()))
    tokenizer = load_tokenizer(tokenizer_file)
    config = Config()
    config.model.arch, config.model.n_layer, config.model.n_embd = arch, 2, 16
    config.model.kernel_size, config.model.dilation_growth = 3, 2   # cnn: sees 7 tokens
    config.model.seq_len, config.model.vocab_size = 16, tokenizer.vocab_size
    run, _ = tmp_path / "run", torch.manual_seed(0)  # the same model whatever ran before
    checkpoint.save(run, checkpoint.TrainingState(
        model=build_model(config.model).state_dict(), optimizer={}, step=0, consumed_samples=0,
        config=config.to_dict(), tokenizer_sha256=tokenizer.sha256), keep=1)
    shutil.copy(tokenizer_file, run / "tokenizer.json")
    return run


def test_a_llama_run_explains_with_attention_and_the_logit_lens(tmp_path):
    run = _hand_made_run(tmp_path, "llama")  # rotary, 4 heads sharing 4 key/value heads
    assert explain("--run", run, "--text", TEXT[:40], "--out", tmp_path / "r") == 0
    report, page = read(tmp_path / "r")
    attention = report["texts"][0]["attention"]
    assert (attention["layers"], attention["heads"]) == (2, 4)
    assert max(attention["checks"].values()) < 1e-5
    assert "has no attention layers" not in page and not report["notes"]


@pytest.mark.parametrize("arch", [a for a in ARCHES if a not in ("gpt", "llama")])
def test_other_architectures_explain_without_attention(tmp_path, arch):
    run = _hand_made_run(tmp_path, arch)
    assert explain("--run", run, "--text", TEXT[:40], "--out", tmp_path / "r") == 0
    report, page = read(tmp_path / "r")
    text = report["texts"][0]
    assert f"model.arch={arch} has no attention layers" in text["attention"]["absent"]
    assert f"Not shown: model.arch={arch} has no attention layers" in page
    attributed = text["attribution"]
    assert len(attributed["gradient_x_input"]) == attributed["context"][1] - \
        attributed["context"][0] > 0
    assert all(f"id={name}-0 " in page for name in SECTIONS)
    rec = text["recurrent"]
    if arch not in CELLS:
        assert rec == {"absent": f"model.arch={arch} is not a recurrent model"}
        return
    assert rec["torch_max_error"] < 1e-5 and len(rec["layers"]) == 2
    assert list(rec["layers"][0]["gates"]) == list(recurrent.GATES[CELLS[arch]])
    assert len(rec["layers"][0]["hidden_norm"]) == rec["span"][1] - rec["span"][0]  # its inputs
    assert rec["span"] == [text["focus"]["window"][0], text["focus"]["window"][1] - 1]


@pytest.mark.parametrize("args, code, message", [
    (["--text", "a"], 2, "--text: encodes to 1 token(s); a report needs at least 2"),
    (["--text", ""], 2, "--text: encodes to 0 token(s)"),
    (["--text", "abc", "--position", "3"], 2, "--position 3: --text has positions 1..2"),
    (["--data", "DATA"], 2, "--data needs --split"),
    (["--text", "abc", "--split", "val"], 2, "--split and --max-windows go with --data"),
])
def test_bad_input_is_one_line(tiny_run, tmp_path, capsys, args, code, message):
    assert explain("--run", tiny_run, *args, "--out", tmp_path / "r") == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []                     # no report, no .partial


def test_device_cuda_without_one_is_one_line(tiny_run, tmp_path, capsys):
    status = explain("--run", tiny_run, "--text", "abc", "--device", "cuda", "--out",
                     tmp_path / "r")
    if torch.cuda.is_available():
        assert status == 0 and read(tmp_path / "r")[0]["device"].startswith("cuda")
        return
    err = capsys.readouterr().err
    assert status == 2 and err == "hvdlm.explain: error: --device cuda: no CUDA device is " \
        "available here\n"
    assert list(tmp_path.iterdir()) == []


def test_missing_run_and_taken_out_are_one_line(tiny_run, tmp_path, capsys):
    assert explain("--run", tmp_path / "nope", "--text", "abc", "--out", tmp_path / "r") == 1
    assert capsys.readouterr().err == f"hvdlm.explain: error: {tmp_path / 'nope'}: no such run " \
                                      "folder\n"
    assert explain("--run", tiny_run, "--file", tmp_path / "no.txt", "--out", tmp_path / "r") == 1
    assert "no.txt: cannot read the --file (No such file or directory)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep").write_text("x")
    assert explain("--run", tiny_run, "--text", "abc", "--out", tmp_path / "r") == 1
    assert "already exists; choose a new --out" in capsys.readouterr().err
    explainer = Explainer(Run.open(tiny_run).model, SEQ_LEN, 257,
                          load_tokenizer(tiny_run / "tokenizer.json"), torch.device("cpu"),
                          Options())
    with pytest.raises(UsageError, match="token id 300 is outside the model's vocabulary"):
        explainer.text([1, 300, 2], "ids")


# --- the page in a real browser -------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed by scripts/install-chromium.sh (as root) if missing."""
    try:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "install-chromium.sh")],
                              capture_output=True, text=True, timeout=540)
    except subprocess.TimeoutExpired:
        pytest.skip("scripts/install-chromium.sh did not finish within 540 s")
    if proc.returncode != 0:
        pytest.skip(f"scripts/install-chromium.sh failed (exit {proc.returncode}): "
                    f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def headless(browser: str, page: Path, work: Path, *args: str) -> tuple[str, list[str], list[str]]:
    """Open `page` in headless Chromium: (stdout, console messages, URLs the page requested
    that are not file: or data:). Name lookups fail inside the browser: nothing leaves."""
    net_log = work / f"net-{page.stem}.json"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
         f"--log-net-log={net_log}", f"--user-data-dir={work / 'profile'}", *args,
         page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requested = [e["params"]["url"] for e in log["events"] if e["type"] == start
                 and ("file://" in e["params"].get("site_for_cookies", "")
                      or e["params"].get("initiator") == "null")
                 and not e["params"]["url"].startswith(("file:", "data:"))]
    return proc.stdout, console, requested


@pytest.mark.browser
def test_page_renders_in_headless_chromium(data_report, chromium, tmp_path):
    out, report, page = data_report
    # Self-contained in its text: no script, stylesheet link, import or remote URL at all.
    assert not re.search(r"<script|<link|@import|url\(|(src|href)\s*=\s*[\"']?\s*(https?:|//)",
                         page, re.I)
    # The harness sees what it must: a page with a console error and a remote image.
    bad = tmp_path / "bad.html"
    bad.write_text('<img src="http://example.invalid/x.png"><script>console.error("boom")'
                   "</script>")
    _, console, requested = headless(chromium, bad, tmp_path, "--dump-dom")
    assert any('"boom"' in line for line in console) and requested == [
        "http://example.invalid/x.png"]

    dom, console, requested = headless(chromium, out / "index.html", tmp_path, "--dump-dom")
    assert console == [] and requested == []
    for section in ["dataset", *(f"{name}-0" for name in SECTIONS)]:
        assert re.search(rf'<section id="{section}"', dom), section
    model = report["model"]
    assert dom.count('<img class="map"') == model["n_layer"] * model["n_head"] + 1  # + the lens
    shot = tmp_path / "explain.png"
    headless(chromium, out / "index.html", tmp_path, f"--screenshot={shot}",
             "--window-size=1280,2000", "--hide-scrollbars")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    print(f"screenshot: {shot}")
