"""One config system: dataclass defaults < TOML file < `section.key=value` overrides.

    python -m hvdlm.train --data DATA --out RUN --config run.toml model.n_layer=4 train.lr=3e-4

Each key's meaning is written once, on its field (`setting(default, doc, choices)`);
`--print-config`'s comments (`to_toml(cfg, comments=True)`) and docs/configuration.md
(hvdlm/config_reference.py) are made from it.

Values, from the file or the command line: an int key takes a whole number only (`2.5` and
`2.5e0` are refused; `1e3` and `2.0`, exactly whole, are taken) within TOML's 64 bits; a float
key a finite number (no nan or inf); a bool key true | false | 1 | 0; a key with choices one of
them; a string key any text UTF-8 can hold. Anything else, or an unknown key, is a one-line
UsageError naming the key (and the closest valid ones). The resolved config is written to
RUN/config.toml by tomli-w, so every accepted value reads back as it was, and is stored in
every checkpoint.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import sys
import textwrap
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn, get_type_hints

import tomli_w

from hvdlm import untrusted
from hvdlm.errors import DataError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ARCHES = ("gpt", "llama", "lstm", "gru", "rnn", "cnn")
INT_LIMIT = 2**63  # TOML integers are 64-bit signed: [-2**63, 2**63)
BOOLS = {"true": True, "1": True, "false": False, "0": False}


def setting(default: Any, doc: str, choices: tuple[str, ...] = ()) -> Any:
    """A config field with its meaning and, for a key with a fixed set of values, the values."""
    return field(default=default, metadata={"doc": doc, "choices": choices})


@dataclass
class ModelConfig:
    arch: str = setting(
        "gpt", "model family: gpt (pre-LN decoder, causal attention, learned positions, GELU), "
        "llama (RMSNorm, rotary positions, SwiGLU, grouped-query attention, no biases), "
        "lstm, gru, rnn (embedding, recurrent layers, linear) or cnn (gated convolutional LM, "
        "Dauphin et al. 2017: residual blocks of causal 1-D convolution and GLU, no positions)",
        ARCHES)
    n_layer: int = setting(4, "layers (transformer, recurrent or convolutional blocks)")
    n_head: int = setting(4, "gpt and llama: attention heads; must divide model.n_embd")
    n_kv_head: int = setting(0, "llama only: key/value heads (grouped-query attention); must "
                                "divide model.n_head; 0 = model.n_head (plain multi-head)")
    rope_theta: float = setting(10000.0, "llama only: base of the rotary embeddings' "
                                         "frequencies (Llama 3: 500000)")
    ffn_hidden: int = setting(0, "llama only: SwiGLU hidden width; 0 = 8 x model.n_embd / 3 "
                                 "rounded up to a multiple of 64 (Llama's rule)")
    n_embd: int = setting(128, "width: embedding and hidden size")
    seq_len: int = setting(128, "tokens per training window (the context length)")
    dropout: float = setting(0.0, "dropout probability, in [0, 1)")
    tie_embeddings: bool = setting(True, "the output layer shares the input embedding's weights")
    kernel_size: int = setting(4, "cnn only: width of each causal convolution")
    dilation_growth: int = setting(2, "cnn only: layer i dilates by dilation_growth**i (1 = "
                                      "none); an output sees 1 + (kernel_size-1) x the sum of "
                                      "dilations tokens (46 by default), at most model.seq_len")
    vocab_size: int = setting(0, "taken from the dataset's manifest; 0 = not yet known")


@dataclass
class TrainConfig:
    micro_batch: int = setting(8, "windows per rank per forward/backward pass")
    grad_accum: int = setting(1, "passes (micro-batches) per optimizer step")
    global_batch: int = setting(
        0, "windows per optimizer step over all ranks; > 0 sets train.grad_accum to "
        "global_batch / (micro_batch x ranks) for the ranks at hand, so a resume on another "
        "node count keeps the optimisation (0 = use train.grad_accum)")
    max_steps: int = setting(200, "optimizer steps of the whole run")
    schedule_steps: int = setting(
        0, "step at which the cosine decay reaches train.min_lr, which then stays; 0 = "
        "train.max_steps. To run on past a finished run's end at min_lr instead of re-warming "
        "the decay, resume with train.max_steps raised and train.schedule_steps at the old end")
    lr: float = setting(3e-3, "peak learning rate of AdamW: linear warm-up to it, then cosine "
                              "decay to train.min_lr")
    min_lr: float = setting(3e-4, "learning rate at the end of the cosine decay, <= train.lr")
    warmup_steps: int = setting(20, "steps of linear warm-up")
    weight_decay: float = setting(0.1, "AdamW weight decay, on matrices only")
    beta1: float = setting(0.9, "AdamW's first-moment decay, in [0, 1)")
    beta2: float = setting(0.95, "AdamW's second-moment decay, in [0, 1)")
    grad_clip: float = setting(1.0, "largest global gradient norm; 0 disables clipping")
    eval_interval: int = setting(100, "steps between validations")
    eval_batches: int = setting(8, "micro-batches per rank per validation; 0 = the whole split")
    ckpt_interval: int = setting(100, "steps between checkpoints")
    keep_checkpoints: int = setting(3, "newest checkpoints kept in RUN/checkpoints")
    log_interval: int = setting(10, "steps between log lines and metrics records")
    seed: int = setting(1337, "seed of the data order, the initial weights and dropout")
    precision: str = setting(
        "fp32", "fp32; bf16 (autocast, fp32 master weights and allreduce); fp16 (autocast with "
        "dynamic loss scaling)", ("fp32", "bf16", "fp16"))
    loss_scale_init: float = setting(65536.0, "fp16 only: the loss scale the run starts with")
    loss_scale_growth_interval: int = setting(
        2000, "fp16 only: steps without overflow after which the loss scale doubles")
    compile: str = setting(
        "auto", "torch.compile the model (not the optimizer step); auto = on for CUDA, off on "
        "CPU", ("auto", "true", "false"))
    tf32: bool = setting(True, "TF32 matmuls and convolutions on CUDA (no effect on CPU)")
    activation_checkpointing: bool = setting(
        False, "recompute each GPT/Llama/CNN block's activations in backward instead of "
        "keeping them")
    fp16_allreduce: bool = setting(False, "send gradients as fp16 on the wire (Horovod's "
                                          "Compression.fp16)")
    shard_optimizer: int = setting(
        0, "ZeRO stage over Horovod (docs/sharding.md): 0 = every rank keeps all of AdamW's "
        "state; 1 = each rank keeps and steps 1/N of it, updated weights all-gathered; 2 = "
        "also reduce-scatters the gradients instead of all-reducing them")
    device: str = setting("auto", "where each rank trains; auto = its GPU if there is one",
                          ("auto", "cpu", "cuda"))
    num_workers: int = setting(0, "DataLoader worker processes per rank")
    pin_cores: bool = setting(
        True, "with several ranks on a node, give each its own share of the cores before "
        "Horovod starts (unless Slurm or taskset has pinned them already)")
    keep_freed_memory: bool = setting(
        True, "on CPU, keep freed memory in the process instead of handing it back to the "
        "kernel after every step (fewer page faults; glibc only, and MALLOC_TRIM_THRESHOLD_, "
        "MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES, when set, win)")
    max_bad_steps: int = setting(3, "steps with a non-finite gradient skipped before the run "
                                    "stops")
    peak_flops: float = setting(989e12, "peak FLOP/s of one device, for the MFU figure on GPU "
                                        "(989e12: H100/H200 dense bf16)")
    init_from: str = setting("", "start from the weights of an hvdlm checkpoint or a GPT-2 "
                                 "folder (as hvdlm.export writes); \"\" = random weights")
    log_format: str = setting("auto", "bar: a progress bar; lines: one line per log interval "
                                      "(as in a Slurm .out); auto = bar on a terminal, else lines",
                              ("auto", "bar", "lines"))
    wandb_project: str = setting("", "Weights & Biases project; \"\" = no W&B (pip install "
                                     "'hvdlm[wandb]')")
    wandb_name: str = setting("", "W&B run name; \"\" = the run folder's name")
    wandb_mode: str = setting("online", "online: sent as the run goes; offline: kept in the run "
                                        "folder to sync later (nodes without internet)",
                              ("online", "offline", "disabled"))
    shared_run_dir: bool = setting(
        False, "accept a run folder that group or others may write (a team's project folder) "
        "and give private files (checkpoints, tokenizer copy, env.json, RUN/.lock) the umask's "
        "mode instead of 0600/0700. Risk: anyone who may write RUN can plant links where the "
        "run writes, replace checkpoints, or hold RUN/.lock so that the run cannot start")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


def _whole(value: Any) -> Decimal | None:
    """`value` exactly, if it is a whole number (1e3 and 2.0 are; 2.5, nan and True are not)."""
    if isinstance(value, bool):
        return None
    try:  # Decimal: exact, where float("9007199254740993") would round
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        return None
    return number if number.is_finite() and number == number.to_integral_value() else None


def _coerce(key: str, value: Any, kind: type, choices: tuple[str, ...]) -> Any:
    """Convert a TOML or command-line value to the field's type, or raise naming the key."""
    def refuse(expected: str = kind.__name__) -> NoReturn:
        raise UsageError(f"config key {key}: expected {expected}, got {value!r}")
    text = value.strip().lower() if isinstance(value, str) else None
    if kind is bool:
        if isinstance(value, bool) or text in BOOLS:
            return value if isinstance(value, bool) else BOOLS[text]
        refuse()
    if kind is str:
        if isinstance(value, bool) and "true" in choices:  # compile = true, from a TOML file
            return str(value).lower()
        if not isinstance(value, str):
            refuse()
        try:
            value.encode("utf-8")  # a lone surrogate (undecodable argv bytes) cannot be written
        except UnicodeEncodeError:
            refuse("text that UTF-8 can hold")
        return value
    if kind is int:
        whole = _whole(value)
        if whole is None:
            refuse()
        if not -INT_LIMIT <= whole < INT_LIMIT:  # before int(): 1e999999999 is whole too
            refuse("int within 64 bits")
        return int(whole)
    if isinstance(value, bool):
        refuse()
    try:  # a float key: from text, a TOML float or a TOML int
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        refuse()
    if not math.isfinite(number):
        refuse("a finite float")
    return number


@functools.cache
def _types(section: type) -> dict[str, type]:
    return get_type_hints(section)  # the annotations are strings: evaluated once, not per key


def _set(cfg: Config, dotted: str, value: Any) -> None:
    section_name, _, key = dotted.partition(".")
    known = section_name in {f.name for f in dataclasses.fields(cfg)}
    section = getattr(cfg, section_name) if known else None
    fields = {f.name: f for f in dataclasses.fields(section)} if section is not None else {}
    if key not in fields:
        keys = [f"{s}.{k}" for s, d in cfg.to_dict().items() for k in d]
        close = difflib.get_close_matches(dotted, keys, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"unknown config key {dotted!r}{hint}")
    kind = _types(type(section))[key]
    setattr(section, key, _coerce(dotted, value, kind, fields[key].metadata.get("choices", ())))


def load_config(toml_path: str | Path | None = None, overrides: list[str] = (),
                base: str | Path | None = None) -> Config:
    """Defaults, then the TOML file `base` (a resumed run's RUN/config.toml), then the TOML
    file, then `section.key=value` overrides; validated."""
    cfg = Config()
    for path in (Path(p) for p in (base, toml_path) if p is not None):
        try:  # a regular file of at most 16 MiB (hvdlm/untrusted.py)
            data = tomllib.loads(untrusted.read_text(path, 16 * untrusted.MiB, "config file"))
        except DataError as err:
            raise UsageError(str(err)) from None
        except tomllib.TOMLDecodeError as err:
            raise UsageError(f"{path}: not valid TOML ({err})") from None
        for section, table in data.items():
            if not isinstance(table, dict):
                raise UsageError(f"{path}: {section!r} must be a [section] table")
            for key, value in table.items():
                _set(cfg, f"{section}.{key}", value)
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"override {item!r} must look like section.key=value")
        _set(cfg, dotted.strip(), value)
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, dict[str, Any]]) -> Config:
    """Rebuild a Config from `Config.to_dict()` (e.g. out of a checkpoint)."""
    cfg = Config()
    for section, table in data.items():
        for key, value in table.items():
            _set(cfg, f"{section}.{key}", value)
    return cfg


def receptive_field(m: ModelConfig) -> int:
    """Tokens a cnn output depends on: itself and (kernel_size - 1) x dilation per layer
    (capped at 10**9: validate() only compares it with seq_len)."""
    if m.kernel_size <= 1:
        return 1
    if m.n_layer > 10**6:
        return 10**9
    span, dilation = 0, 1
    for _ in range(max(m.n_layer, 0)):
        span += max(m.kernel_size - 1, 0) * dilation
        dilation *= max(m.dilation_growth, 1)
        if span >= 10**9:
            return 10**9
    return 1 + span


def validate(cfg: Config) -> None:
    """Range checks that a type alone cannot express; each error names its key."""
    for section in dataclasses.fields(cfg):
        for f in dataclasses.fields(getattr(cfg, section.name)):
            choices = f.metadata.get("choices", ())
            value = getattr(getattr(cfg, section.name), f.name)
            if choices and value not in choices:
                raise UsageError(f"config key {section.name}.{f.name} must be one of "
                                 f"{', '.join(choices)} (got {value!r})")
    m, t = cfg.model, cfg.train
    checks = [
        (m.n_layer >= 1, "model.n_layer", "must be >= 1"),
        (m.n_embd >= 1, "model.n_embd", "must be >= 1"),
        (m.n_head >= 1, "model.n_head", "must be >= 1"),
        (m.arch not in ("gpt", "llama") or m.n_embd % max(m.n_head, 1) == 0, "model.n_embd",
         f"({m.n_embd}) must be divisible by model.n_head ({m.n_head})"),
        (m.arch != "llama" or m.n_embd // max(m.n_head, 1) % 2 == 0, "model.n_embd",
         f"({m.n_embd}) / model.n_head ({m.n_head}) must be even (rotary pairs)"),
        (m.n_kv_head >= 0 and m.n_head % max(m.n_kv_head, 1) == 0, "model.n_kv_head",
         f"({m.n_kv_head}) must divide model.n_head ({m.n_head}); 0 = model.n_head"),
        (m.rope_theta > 0, "model.rope_theta", "must be > 0"),
        (m.ffn_hidden >= 0, "model.ffn_hidden", "must be >= 0 (0 = Llama's rule)"),
        (m.seq_len >= 1, "model.seq_len", "must be >= 1"),
        (m.kernel_size >= 1, "model.kernel_size", "must be >= 1"),
        (m.dilation_growth >= 1, "model.dilation_growth", "must be >= 1 (1 = no dilation)"),
        (m.arch != "cnn" or receptive_field(m) <= m.seq_len, "model.kernel_size",
         f"({m.kernel_size}) with model.dilation_growth ({m.dilation_growth}) over "
         f"{m.n_layer} layers sees {receptive_field(m):,} tokens, more than model.seq_len "
         f"({m.seq_len}); lower them or raise model.seq_len"),
        (0.0 <= m.dropout < 1.0, "model.dropout", "must be in [0, 1)"),
        (t.micro_batch >= 1, "train.micro_batch", "must be >= 1"),
        (t.grad_accum >= 1, "train.grad_accum", "must be >= 1"),
        (t.global_batch >= 0, "train.global_batch", "must be >= 0 (0 = use train.grad_accum)"),
        (t.max_steps >= 1, "train.max_steps", "must be >= 1"),
        (t.lr > 0, "train.lr", "must be > 0"),
        (0 <= t.min_lr <= t.lr, "train.min_lr", "must be in [0, train.lr]"),
        (t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0"),
        (t.weight_decay >= 0, "train.weight_decay", "must be >= 0"),
        (t.schedule_steps >= 0, "train.schedule_steps", "must be >= 0 (0 = train.max_steps)"),
        (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1/beta2", "must be in [0, 1)"),
        (t.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 disables clipping)"),
        (t.shard_optimizer in (0, 1, 2), "train.shard_optimizer", "must be 0, 1 or 2"),
        (t.eval_interval >= 1, "train.eval_interval", "must be >= 1"),
        (t.eval_batches >= 0, "train.eval_batches", "must be >= 0"),
        (t.ckpt_interval >= 1, "train.ckpt_interval", "must be >= 1"),
        (t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1"),
        (t.log_interval >= 1, "train.log_interval", "must be >= 1"),
        (t.num_workers >= 0, "train.num_workers", "must be >= 0"),
        (t.max_bad_steps >= 0, "train.max_bad_steps", "must be >= 0"),
        (t.peak_flops > 0, "train.peak_flops", "must be > 0"),
        (t.loss_scale_init >= 1, "train.loss_scale_init", "must be >= 1"),
        (t.loss_scale_growth_interval >= 1, "train.loss_scale_growth_interval", "must be >= 1"),
    ]
    for ok, key, message in checks:
        if not ok:
            raise UsageError(f"config key {key} {message}")


def for_world_size(cfg: Config, world_size: int) -> Config:
    """`cfg` with grad_accum = global_batch / (micro_batch x world_size) when train.global_batch
    is set, so a run keeps its optimisation whatever the number of ranks (a resume on another
    node count included)."""
    t = cfg.train
    if t.global_batch <= 0:
        return cfg
    per_pass = t.micro_batch * world_size
    if t.global_batch % per_pass:
        raise UsageError(f"config key train.global_batch ({t.global_batch}) is not a multiple of "
                         f"train.micro_batch x ranks ({t.micro_batch} x {world_size} = "
                         f"{per_pass}); change one of them")
    return dataclasses.replace(cfg, train=dataclasses.replace(
        t, grad_accum=t.global_batch // per_pass))


def meaning(f: dataclasses.Field) -> str:
    """A field's doc, with its choices when it has some."""
    choices = f.metadata.get("choices", ())
    return f.metadata.get("doc", "") + (f" (one of: {', '.join(choices)})" if choices else "")


def to_toml(cfg: Config, comments: bool = False) -> str:
    """The config as TOML that tomllib reads back to the same values (tomli-w writes each
    value: escapes, unicode, exponents); with `comments`, each key under its meaning."""
    lines: list[str] = []
    for section in dataclasses.fields(cfg):
        lines.append(f"[{section.name}]")
        for f in dataclasses.fields(getattr(cfg, section.name)):
            if comments:
                lines += textwrap.wrap(meaning(f), 98, initial_indent="# ",
                                       subsequent_indent="# ")
            lines.append(tomli_w.dumps({f.name: getattr(getattr(cfg, section.name), f.name)}
                                       ).rstrip("\n"))
        lines.append("")
    return "\n".join(lines)
