"""python -m hvdlm.generate on a tiny trained run: seeds, greedy decoding, the prompt alone,
refusals in one line; --checkpoint and --device; the one decoding loop (continue_batch) with
hand-made models (end-of-text, top-k, the context window); the decoding controls (stop, ban, repetition penalty, max time, samples,
PII redaction, top-p) on a hand-built checkpoint whose continuation is certain.

    .venv/bin/python -m pytest tests/test_generate.py
"""
from __future__ import annotations

import shutil
import time

import pytest
import torch

from hvdlm import generate as generate_command
from hvdlm.config import load_config
from hvdlm.generate import main as generate_main
from hvdlm.models import build_model
from hvdlm.models.decoding import Continuation, DecodeOptions, continue_batch
from hvdlm.text.shards import load_manifest
from hvdlm.text.tokenizer import build_byte_tokenizer, hf_to_json_bytes, load_tokenizer
from hvdlm.training import checkpoint
from hvdlm.training.run import Run
from tests.conftest import TINY_RUN
from tests.conftest import TINY_SEQ_LEN as SEQ_LEN
from tests.conftest import run_module

PROMPT = "def main("


def generate(run, *args: object, check: bool = True):
    return run_module("hvdlm.generate", "--run", run, *args, check=check, timeout=120)


def test_same_seed_same_text_other_seed_other_text(tiny_run):
    opts = ["--prompt", PROMPT, "--max-new-tokens", "48", "--temperature", "1", "--top-k", "0"]
    a = generate(tiny_run, *opts, "--seed", "3").stdout
    assert a == generate(tiny_run, *opts, "--seed", "3").stdout
    assert a.startswith(PROMPT) and len(a) > len(PROMPT) + 1
    others = {generate(tiny_run, *opts, "--seed", str(s)).stdout for s in (4, 5)}
    assert a not in others  # 48 draws from a nearly flat distribution never repeat


def test_temperature_zero_is_greedy_and_ignores_the_seed(tiny_run, byte_dataset):
    opts = ["--prompt", PROMPT, "--max-new-tokens", "24", "--temperature", "0"]
    text = generate(tiny_run, *opts, "--seed", "1").stdout
    assert text == generate(tiny_run, *opts, "--seed", "2").stdout
    # The same greedy decoding, by hand: the argmax of the model's last position each time.
    model = Run.open(tiny_run).model
    tokenizer = load_tokenizer(load_manifest(byte_dataset).tokenizer_path)
    ids = tokenizer.encode(PROMPT)
    new = []
    with torch.no_grad():
        for _ in range(24):
            token = int(model(torch.tensor([(ids + new)[-SEQ_LEN:]]))[0, -1].argmax())
            if token == tokenizer.eos_id:
                break
            new.append(token)
    assert text == PROMPT + tokenizer.decode(new) + "\n"


def test_top_k_one_is_greedy_at_any_temperature(tiny_run):
    greedy = generate(tiny_run, "--prompt", PROMPT, "--max-new-tokens", "16",
                      "--temperature", "0").stdout
    top1 = generate(tiny_run, "--prompt", PROMPT, "--max-new-tokens", "16", "--temperature", "2",
                    "--top-k", "1", "--seed", "9").stdout
    assert top1 == greedy


def test_max_new_tokens_zero_prints_the_prompt(tiny_run):
    proc = generate(tiny_run, "--prompt", PROMPT, "--max-new-tokens", "0")
    assert proc.stdout == PROMPT + "\n"


def test_explicit_tokenizer_when_the_dataset_moved(tiny_run, byte_dataset, tmp_path):
    moved = tmp_path / "run"
    shutil.copytree(tiny_run, moved)
    (moved / "data_dir.txt").unlink()
    (moved / "tokenizer.json").unlink()  # a run from before runs kept their tokenizer
    proc = generate(moved, "--prompt", PROMPT, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "cannot find the run's tokenizer; pass --tokenizer FILE" in proc.stderr
    opts = ["--prompt", PROMPT, "--max-new-tokens", "12", "--seed", "5"]
    assert generate(moved, *opts, "--tokenizer", byte_dataset / "tokenizer.json").stdout == \
        generate(tiny_run, *opts).stdout



def a_then_b_then_eos_gpt(tokenizer) -> tuple[torch.nn.Module, dict]:
    """A GPT whose next token is certain: after 'a' comes 'b', after 'b' end-of-text, after
    anything else 'a'. Blocks and positions are zeroed, so the logits are head(ln_f(wte[t])):
    each input embedding is a one-hot "state", each head row picks the state it follows."""
    cfg = load_config(None, [*TINY_RUN, "model.tie_embeddings=false"])
    cfg.model.vocab_size = tokenizer.vocab_size
    model = build_model(cfg.model)
    a, b, eos = ord("a"), ord("b"), tokenizer.eos_id
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.ln_f.weight.fill_(1.0)
        model.wte.weight[:, 2] = 1.0          # state 2: any token but 'a' and 'b'
        model.wte.weight[a] = torch.eye(cfg.model.n_embd)[0]   # state 0
        model.wte.weight[b] = torch.eye(cfg.model.n_embd)[1]   # state 1
        for nxt, state in ((b, 0), (eos, 1), (a, 2)):
            model.head.weight[nxt, state] = 20.0  # ~75 nats above every other token
    return model, cfg.to_dict()


def test_generation_stops_at_end_of_text(tmp_path):
    tokenizer_file = tmp_path / "tokenizer.json"
    tokenizer_file.write_bytes(hf_to_json_bytes(build_byte_tokenizer()))
    tokenizer = load_tokenizer(tokenizer_file)
    model, config = a_then_b_then_eos_gpt(tokenizer)
    nxt = model(torch.tensor([[ord("x"), ord("a"), ord("b")]]))[0].softmax(-1)
    assert nxt.argmax(-1).tolist() == [ord("a"), ord("b"), tokenizer.eos_id]
    assert nxt.max(-1).values.min().item() > 1 - 1e-9  # each certain
    run = tmp_path / "run"
    checkpoint.save(run, checkpoint.TrainingState(
        model=model.state_dict(), optimizer={}, step=1, consumed_samples=0, config=config,
        tokenizer_sha256=tokenizer.sha256), keep=1)
    # Sampled (temperature 1, no top-k), with room for 50 tokens: "ab", then end-of-text.
    out = generate(run, "--prompt", "x", "--max-new-tokens", "50", "--temperature", "1",
                   "--top-k", "0", "--tokenizer", tokenizer_file).stdout
    assert out == "xab\n"

def test_wrong_tokenizer_is_refused_in_one_line(tiny_run, bpe_dataset):
    proc = generate(tiny_run, "--prompt", PROMPT, "--tokenizer", bpe_dataset / "tokenizer.json",
                    check=False)
    assert proc.returncode == 1 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert "not the tokenizer this checkpoint was trained with" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--max-new-tokens", "-1"], "must be >= 0"),
    (["--temperature", "-0.5"], "must be >= 0"),
    (["--top-k", "-3"], "must be >= 0"),
    (["--max-new-tokens", "many"], "invalid int value: 'many'"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
])
def test_bad_options_exit_2_in_one_line(tmp_path, args, message):
    proc = run_module("hvdlm.generate", "--run", tmp_path, "--prompt", "x", *args, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_missing_prompt_exits_2_in_one_line(tmp_path):
    proc = run_module("hvdlm.generate", "--run", tmp_path, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--prompt" in proc.stderr


# -- the decoding loop with hand-made models ------------------------------------------------

def sample(model: torch.nn.Module, ids: list[int], max_new_tokens: int, seq_len: int,
           temperature: float = 1.0, top_k: int = 0, eos_id: int | None = None,
           generator: torch.Generator | None = None) -> list[int]:
    """The tokens hvdlm/models/decoding.py's loop draws after one prompt."""
    options = DecodeOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)
    return continue_batch(model, torch.tensor([ids]), options, seq_len=seq_len, eos_id=eos_id,
                          generator=generator)[0].tokens


class Successor(torch.nn.Module):
    """Next token = current + 1 (a sharp peak), end-of-text after `last`; records contexts."""

    def __init__(self, vocab: int, eos: int, last: int):
        super().__init__()
        self.vocab, self.eos, self.last, self.contexts = vocab, eos, last, []

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.contexts.append(idx[0].tolist())
        nxt = torch.where(idx >= self.last, torch.full_like(idx, self.eos), idx + 1)
        return torch.nn.functional.one_hot(nxt, self.vocab).float() * 50.0


def test_sampling_stops_at_end_of_text():
    model = Successor(vocab=12, eos=11, last=5)
    assert sample(model, [1], 20, seq_len=8, temperature=0, eos_id=11) == [2, 3, 4, 5]
    assert len(model.contexts) == 5  # four tokens, then end-of-text ended it
    gen = torch.Generator().manual_seed(0)
    assert sample(model, [2], 20, seq_len=8, temperature=1.0, top_k=3, eos_id=11,
                  generator=gen) == [3, 4, 5]
    # Without an end-of-text id the same model runs to max_new_tokens.
    assert sample(model, [5], 3, seq_len=8, temperature=0, eos_id=None) == [11, 11, 11]


def test_a_model_whose_argmax_is_eos_generates_nothing():
    class AlwaysEos(torch.nn.Module):
        def forward(self, idx):
            logits = torch.zeros(*idx.shape, 7)
            logits[..., 6] = 30.0
            return logits
    assert sample(AlwaysEos(), [0, 1, 2], 50, seq_len=4, temperature=0, eos_id=6) == []
    assert sample(AlwaysEos(), [0, 1, 2], 50, seq_len=4, temperature=0.7, eos_id=6,
                  generator=torch.Generator().manual_seed(1)) == []



def test_draws_come_from_the_seeded_generator_alone():
    class Flat(torch.nn.Module):  # 50 equally likely tokens: any seed gives another sequence
        def forward(self, idx):
            return torch.zeros(*idx.shape, 50)

    def draw(seed: int, global_seed: int) -> list[int]:
        torch.manual_seed(global_seed)  # torch's global RNG must not matter
        return sample(Flat(), [0], 40, seq_len=4, generator=torch.Generator().manual_seed(seed))
    assert draw(7, global_seed=1) == draw(7, global_seed=2)
    assert draw(7, global_seed=1) != draw(8, global_seed=1)

def test_context_is_cropped_to_seq_len_and_zero_tokens_calls_nothing():
    model = Successor(vocab=40, eos=39, last=30)
    out = sample(model, [1, 2, 3, 4, 5], 6, seq_len=3, temperature=0, eos_id=39)
    assert out == [6, 7, 8, 9, 10, 11]
    assert model.contexts[0] == [3, 4, 5] and model.contexts[-1] == [8, 9, 10]
    assert all(len(c) <= 3 for c in model.contexts)
    model.contexts.clear()
    assert sample(model, [1, 2], 0, seq_len=3) == [] and model.contexts == []


def test_top_k_keeps_only_the_k_most_likely():
    class Fixed(torch.nn.Module):
        def forward(self, idx):
            return torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]).expand(*idx.shape, 5)
    gen = torch.Generator().manual_seed(0)
    drawn = sample(Fixed(), [0], 300, seq_len=4, temperature=5.0, top_k=2, generator=gen)
    assert set(drawn) == {3, 4}  # a high temperature, but only the top two survive
    gen = torch.Generator().manual_seed(0)
    assert len(set(sample(Fixed(), [0], 300, seq_len=4, temperature=5.0, generator=gen))) == 5


# -- decoding controls on the command line, on a checkpoint whose continuation is certain ----

def bigram_gpt(tokenizer, table: dict[str, list[tuple[str, float]]],
               default: list[tuple[str, float]]) -> tuple[torch.nn.Module, dict]:
    """A GPT (blocks and positions zeroed: logits = head(ln_f(wte[t]))) whose next token
    depends on the last one only: `table[char]` lists (next char, weight), the weight being
    ~4 nats each; every other token follows `default`. "" stands for end-of-text."""
    cfg = load_config(None, [*TINY_RUN, "model.tie_embeddings=false"])
    cfg.model.vocab_size = tokenizer.vocab_size
    model = build_model(cfg.model)
    token = lambda ch: tokenizer.eos_id if ch == "" else ord(ch)  # noqa: E731 (byte ids)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.ln_f.weight.fill_(1.0)
        model.wte.weight[:, len(table)] = 1.0  # the default state
        for state, (ch, _) in enumerate(table.items()):
            model.wte.weight[token(ch)] = torch.eye(cfg.model.n_embd)[state]
        for state, nexts in [*enumerate(table.values()), (len(table), default)]:
            for ch, weight in nexts:
                model.head.weight[token(ch), state] = weight
    return model, cfg.to_dict()


# "x" -> "ab@cd.fg;" then end-of-text: an e-mail address; after "c" the runner-up is "e",
# after any other character "a", then "z".
CHAIN = {"x": [("a", 20)], "a": [("b", 20)], "b": [("@", 20)], "@": [("c", 20)],
         "c": [("d", 20), ("e", 10)], "d": [(".", 20)], ".": [("f", 20)], "f": [("g", 20)],
         "g": [(";", 20)], ";": [("", 20)]}


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("chain") / "run"
    run.mkdir()
    (run / "tokenizer.json").write_bytes(hf_to_json_bytes(build_byte_tokenizer()))
    tokenizer = load_tokenizer(run / "tokenizer.json")
    model, config = bigram_gpt(tokenizer, CHAIN, default=[("a", 20), ("z", 15)])
    checkpoint.save(run, checkpoint.TrainingState(
        model=model.state_dict(), optimizer={}, step=1, consumed_samples=0, config=config,
        tokenizer_sha256=tokenizer.sha256), keep=1)
    return run


def test_checkpoint_and_device_choose_the_model(chain_run, tmp_path, capsys):
    """A newer checkpoint (step 2: "x" -> "q", then end-of-text) beside the chain's (step 1):
    --checkpoint names the older one, and it writes the chain."""
    run = tmp_path / "run"
    shutil.copytree(chain_run, run)
    tokenizer = load_tokenizer(run / "tokenizer.json")
    model, config = bigram_gpt(tokenizer, {"x": [("q", 20)], "q": [("", 20)]}, [("", 20)])
    checkpoint.save(run, checkpoint.TrainingState(
        model=model.state_dict(), optimizer={}, step=2, consumed_samples=0, config=config,
        tokenizer_sha256=tokenizer.sha256), keep=2)
    older = run / "checkpoints" / "step-00000001.pt"
    assert generated(run, capsys, "--prompt", "x", "--device", "cpu")[0] == "xq\n"
    assert generated(run, capsys, "--prompt", "x", "--device", "cpu", "--checkpoint",
                     str(older))[0] == "xab@cd.fg;\n"


def generated(run, capsys, *args: str) -> tuple[str, str]:
    """hvdlm.generate in this process (no interpreter start): (stdout, stderr)."""
    assert generate_main(["--run", str(run), *args]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


SAMPLED = ["--temperature", "1", "--top-k", "0", "--max-new-tokens", "30"]


def test_the_chain_is_certain_and_redact_pii_hides_its_address(chain_run, capsys):
    assert generated(chain_run, capsys, "--prompt", "x", *SAMPLED)[0] == "xab@cd.fg;\n"
    out, _ = generated(chain_run, capsys, "--prompt", "x", *SAMPLED, "--redact-pii")
    assert out == "<EMAIL>;\n"


def test_stop_strings_end_the_output_before_them(chain_run, capsys):
    assert generated(chain_run, capsys, "--prompt", "x", *SAMPLED, "--stop", "@c")[0] == "xab\n"
    # The first occurrence of any of them wins.
    out, _ = generated(chain_run, capsys, "--prompt", "x", *SAMPLED, "--stop", "fg",
                       "--stop", "b@")
    assert out == "xa\n"


def test_a_banned_string_spanning_two_tokens_is_never_output(chain_run, capsys):
    out, _ = generated(chain_run, capsys, "--prompt", "x", *SAMPLED, "--ban", "cd")
    # Each time "d" would follow "c" its runner-up "e" comes instead, and the chain restarts.
    assert out == "x" + "ab@ce" * 6 + "\n"
    # The prompt's last character counts: "c" + "d" would be the banned string.
    assert generated(chain_run, capsys, "--prompt", "c", *SAMPLED, "--ban", "cd",
                     "--max-new-tokens", "3")[0] == "ceab\n"


def test_repetition_penalty_and_max_time_and_several_samples(chain_run, capsys):
    # From "e" the chain restarts with "a" (weight 20) over "z" (15); "a" already in the text,
    # penalised 2x, loses to "z".
    out, _ = generated(chain_run, capsys, "--prompt", "x", *SAMPLED, "--ban", "cd",
                       "--repetition-penalty", "2")
    assert out.startswith("xab@cez")
    out, err = generated(chain_run, capsys, "--prompt", "x", *SAMPLED, "--ban", "cd",
                         "--max-time", "1e-6", "--num-samples", "2")
    assert out == "==> sample 1 of 2 <==\nx\n"  # the deadline passed: no second sample
    assert "stopped after 1 of 2 samples: --max-time reached" in err


def test_samples_follow_the_seed_and_top_p_towards_zero_is_greedy(tiny_run, capsys):
    opts = ["--prompt", PROMPT, "--max-new-tokens", "24", "--temperature", "1", "--top-k", "0"]
    one, _ = generated(tiny_run, capsys, *opts, "--seed", "3")
    three, _ = generated(tiny_run, capsys, *opts, "--seed", "3", "--num-samples", "3")
    samples = three.split("==> sample ")[1:]
    assert [s.split("\n", 1)[0] for s in samples] == ["1 of 3 <==", "2 of 3 <==", "3 of 3 <=="]
    texts = [s.split("\n", 1)[1] for s in samples]
    assert texts[0] == one and len(set(texts)) == 3  # the first is the single sample
    greedy, _ = generated(tiny_run, capsys, "--prompt", PROMPT, "--max-new-tokens", "24",
                          "--temperature", "0")
    nucleus, _ = generated(tiny_run, capsys, *opts, "--top-p", "1e-9", "--seed", "4")
    assert nucleus == greedy


def test_max_time_is_shared_by_all_samples(chain_run, capsys, monkeypatch):
    budgets = []

    def slow(*args, **kwargs):  # each sample takes 0.2 s and says what time it was given
        budgets.append(args[2].max_time)
        time.sleep(0.2)
        return Continuation("", [], "time")
    monkeypatch.setattr(generate_command, "continue_text", slow)
    _, err = generated(chain_run, capsys, "--prompt", "x", "--max-time", "0.3",
                       "--num-samples", "3")
    # The command's time, loading included: each sample gets what is left, and none starts
    # once it is spent.
    assert 0 < budgets[0] <= 0.3 and all(0 < b <= 0.1 for b in budgets[1:])
    assert len(budgets) < 3 and f"stopped after {len(budgets)} of 3 samples" in err


@pytest.mark.parametrize("args, message", [
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--repetition-penalty", "-1"], "--repetition-penalty must be > 0"),
    (["--stop", ""], "--stop strings must not be empty"),
    (["--ban", ""], "--ban strings must not be empty"),
    (["--num-samples", "0"], "--num-samples must be >= 1"),
    (["--max-time", "0"], "--max-time must be > 0"),
])
def test_bad_control_options_exit_2_in_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        generate_main(["--run", str(tmp_path), "--prompt", "x", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err, err
