"""One config system: dataclass defaults < TOML file < `section.key=value` overrides.

    python -m hvdlm.train --data DATA --out RUN --config run.toml model.n_layer=4 train.lr=3e-4

Unknown keys and wrong types are UsageErrors naming the key (and the closest valid ones).
The resolved config is written to RUN/config.toml and stored in every checkpoint.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from hvdlm.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ARCHES = ("gpt", "lstm", "gru", "rnn", "cnn")


@dataclass
class ModelConfig:
    arch: str = "gpt"            # gpt | lstm | gru | rnn | cnn
    n_layer: int = 4
    n_head: int = 4              # gpt only
    n_embd: int = 128
    seq_len: int = 128
    dropout: float = 0.0
    tie_embeddings: bool = True
    kernel_size: int = 4         # cnn only: width of each causal convolution
    dilation_growth: int = 2     # cnn only: layer i dilates by dilation_growth**i (1 = none)
    vocab_size: int = 0          # taken from the dataset's manifest; 0 = not yet known


@dataclass
class TrainConfig:
    micro_batch: int = 8         # windows per rank per forward/backward
    grad_accum: int = 1          # micro-batches per optimizer step
    global_batch: int = 0        # windows per optimizer step, all ranks; > 0 sets grad_accum
    max_steps: int = 200
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0       # 0 disables clipping
    eval_interval: int = 100
    eval_batches: int = 8        # micro-batches per rank per periodic eval; 0 = whole split
    ckpt_interval: int = 100
    keep_checkpoints: int = 3
    log_interval: int = 10
    seed: int = 1337
    precision: str = "fp32"      # fp32 | bf16 (autocast; fp32 master weights and allreduce) | fp16 (autocast + dynamic loss scaling)
    compile: str = "auto"        # auto (on for CUDA, off on CPU) | true | false: torch.compile the model (not the optimizer step)
    tf32: bool = True            # TF32 matmuls and convolutions on CUDA (no effect on CPU)
    activation_checkpointing: bool = False  # recompute each GPT/CNN block's activations in backward
    fp16_allreduce: bool = False  # Horovod Compression.fp16 on the wire
    device: str = "auto"         # auto | cpu | cuda
    num_workers: int = 0         # DataLoader worker processes per rank
    max_bad_steps: int = 3       # non-finite steps skipped before the run stops
    peak_flops: float = 989e12   # per device, for MFU on GPU (H100/H200 dense bf16)
    init_from: str = ""          # weights from an hvdlm checkpoint or a GPT-2 folder (export)
    log_format: str = "auto"     # auto (bar on a terminal, else lines) | bar | lines
    wandb_project: str = ""      # W&B project; "" = no W&B (pip install 'hvdlm[wandb]')
    wandb_name: str = ""         # W&B run name ("" = the run folder's name)
    wandb_mode: str = "online"   # online | offline | disabled


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Convert a TOML or command-line value to the field's type, or raise naming the key."""
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return text.lower() in ("true", "1")
            return kind(float(text)) if kind is int and "e" in text.lower() else kind(text)
        except ValueError:
            raise UsageError(f"config key {key}: expected {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UsageError(f"config key {key}: expected {kind.__name__}, got {value!r}")
    return value


def _set(cfg: Config, dotted: str, value: Any) -> None:
    section_name, _, key = dotted.partition(".")
    known = section_name in {f.name for f in dataclasses.fields(cfg)}
    section = getattr(cfg, section_name) if known else None
    hints = get_type_hints(type(section)) if section is not None else {}
    if key not in hints:
        keys = [f"{s}.{k}" for s, d in cfg.to_dict().items() for k in d]
        close = difflib.get_close_matches(dotted, keys, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UsageError(f"unknown config key {dotted!r}{hint}")
    setattr(section, key, _coerce(dotted, value, hints[key]))


def load_config(toml_path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then the TOML file, then `section.key=value` overrides; validated."""
    cfg = Config()
    if toml_path is not None:
        path = Path(toml_path)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as err:
            raise UsageError(f"{path}: cannot read config file ({err.strerror})") from None
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
    m, t = cfg.model, cfg.train
    checks = [
        (m.arch in ARCHES, "model.arch", f"must be one of {', '.join(ARCHES)}"),
        (m.n_layer >= 1, "model.n_layer", "must be >= 1"),
        (m.n_embd >= 1, "model.n_embd", "must be >= 1"),
        (m.n_head >= 1, "model.n_head", "must be >= 1"),
        (m.arch != "gpt" or m.n_embd % max(m.n_head, 1) == 0, "model.n_embd",
         f"({m.n_embd}) must be divisible by model.n_head ({m.n_head})"),
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
        (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1/beta2", "must be in [0, 1)"),
        (t.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 disables clipping)"),
        (t.eval_interval >= 1, "train.eval_interval", "must be >= 1"),
        (t.eval_batches >= 0, "train.eval_batches", "must be >= 0"),
        (t.ckpt_interval >= 1, "train.ckpt_interval", "must be >= 1"),
        (t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1"),
        (t.log_interval >= 1, "train.log_interval", "must be >= 1"),
        (t.precision in ("fp32", "bf16"), "train.precision", "must be fp32 or bf16"),
        (t.device in ("auto", "cpu", "cuda"), "train.device", "must be auto, cpu or cuda"),
        (t.num_workers >= 0, "train.num_workers", "must be >= 0"),
        (t.max_bad_steps >= 0, "train.max_bad_steps", "must be >= 0"),
        (t.log_format in ("auto", "bar", "lines"), "train.log_format",
         "must be auto, bar or lines"),
        (t.wandb_mode in ("online", "offline", "disabled"), "train.wandb_mode",
         "must be online, offline or disabled"),
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


def to_toml(cfg: Config) -> str:
    """Serialise the (flat, two-section) config as TOML."""
    lines: list[str] = []
    for section, table in cfg.to_dict().items():
        # JSON spells a bool, a number or a string as TOML does, escapes included.
        lines += [f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in table.items()), ""]
    return "\n".join(lines)
