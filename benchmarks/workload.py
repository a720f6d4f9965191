"""The training workload every training benchmark times, and one timed job of N ranks.

The same GPT (`MODEL`) on the same byte-tokenized data (`make_dataset`), trained by one of
`TRAIN_CONFIGS`; `one_run` starts the job's ranks (benchmarks.harness) and reads back what they
wrote (benchmarks.ranks): rank 0's tokens/s and CPU time per step, every rank's step times.
Used by benchmarks.scaling, benchmarks.train_overhead, benchmarks.emulated and
benchmarks.dataloader (its dataset).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from benchmarks import ROOT
from benchmarks.harness import (Launch, clear_results, module_cmd, rank_path, read_result,
                                split_config)
from hvdlm.config import ModelConfig
from hvdlm.models import build_model, count_parameters
from hvdlm.training.data import open_dataset

MODEL = {"arch": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 128, "seq_len": 64}
BLOCK = 5  # steps per timed block (hvdlm logs tokens/s every BLOCK steps); also the warm-up
# hvdlm: `hvdlm.training.trainer.train` itself (its settings, metrics allreduce, clipping);
# hvdlm-nostats: without the per-step metrics allreduce (it sends all gradients as one group);
# hvdlm-nograds: without averaging gradients (its Horovod, metrics, pinning, all else): what
# synchronous data parallelism costs here before a byte of gradient moves;
# ddp: the minimal torch.distributed loop of benchmarks/ddp_loop.py;
# nocomm: N ranks each train alone, side by side (the DDP loop without DDP): what sharing the
# machine costs with no communication at all, the ceiling for any data-parallel stack here.
TRAIN_CONFIGS = ("hvdlm", "hvdlm-nostats", "hvdlm-nograds", "ddp", "nocomm")
TORCH_CONFIGS = ("ddp", "nocomm")  # run by benchmarks.torch_ranks; the others by horovod_ranks
SEED = 1337  # the DDP loop's sample order and initialisation


def make_dataset(out: Path) -> Path:
    """A byte-tokenized dataset of the stdlib's email, json and logging packages, kept in
    OUT/data for later runs; the copied corpus is scratch."""
    data = out / "data"
    if (data / "manifest.json").exists():
        return data
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    with tempfile.TemporaryDirectory(prefix="hvdlm-scaling-corpus-") as corpus:
        for pkg in ("email", "json", "logging"):
            for path in sorted((stdlib / pkg).glob("*.py")):
                shutil.copy(path, Path(corpus, f"{pkg}_{path.name}"))
        subprocess.run([sys.executable, "-m", "hvdlm.preprocess", corpus, "--out", str(data),
                        "--tokenizer", "byte", "--seed", "0"], check=True, cwd=ROOT,
                       capture_output=True, timeout=600)
    return data


def model_config(data: str | Path, dropout: float | None = None) -> ModelConfig:
    extra = {} if dropout is None else {"dropout": dropout}
    return ModelConfig(**MODEL, vocab_size=open_dataset(data).vocab_size, **extra)


def grad_bytes(data: Path) -> int:
    """fp32 gradient bytes of the benchmark GPT on `data`'s vocabulary."""
    return 4 * count_parameters(build_model(model_config(data)))


def hvdlm_overrides(micro_batch: int, steps: int, device: str = "cpu") -> list[str]:
    """hvdlm config overrides: the benchmark GPT, BLOCK warm-up steps, `steps` timed ones,
    nothing else (no evaluation, no checkpoints, no loader workers); fp32 without TF32, not
    compiled, on every device, as the DDP loop it is compared with."""
    return [f"model.{k}={v}" for k, v in MODEL.items()] + [
        f"train.micro_batch={micro_batch}", f"train.max_steps={BLOCK + steps + 1}",
        f"train.log_interval={BLOCK}", "train.eval_interval=1000000",
        "train.ckpt_interval=1000000", "train.warmup_steps=2", f"train.device={device}",
        "train.num_workers=0", "train.precision=fp32", "train.compile=false",
        "train.tf32=false"]


def one_run(config: str, np_: int, micro_batch: int, data: Path, steps: int, tmp: Path,
            share: int, launch: Launch = Launch()) -> dict:
    """One job of np_ ranks (`share` cores each), started as `launch` says: rank 0's
    {"tokens_per_s", "cpu_s_per_step"} and "step_times", one list per rank."""
    base, env = split_config(config, TRAIN_CONFIGS)
    result = tmp / "result.json"
    clear_results(result, np_)
    shutil.rmtree(tmp / "run", ignore_errors=True)
    module = "benchmarks.torch_ranks" if base in TORCH_CONFIGS else "benchmarks.horovod_ranks"
    cmd = module_cmd(module, "train", "--config", base, "--data", data, "--micro-batch",
                     micro_batch, "--steps", steps, "--result", result, "--run-dir", tmp / "run")
    launch.run(np_, cmd, env, share=share)
    return {**read_result(result),
            "step_times": [read_result(rank_path(result, r))["step_times"]
                           for r in range(np_)]}
