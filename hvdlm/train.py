"""Train a GPT or RNN language model with Horovod data parallelism.

    python -m hvdlm.train --data DATA --out RUN [--config FILE.toml] [section.key=value ...]
    horovodrun -np 4 -H localhost:4 --gloo python -m hvdlm.train --data DATA --out RUN
    sbatch slurm/train.sbatch            (srun + python -m hvdlm.launch, see README)

Each optimizer step consumes the next G = micro_batch x grad_accum x world_size samples of a
seeded global order (see hvdlm/data.py), so results do not depend on how G is split over ranks.
`--resume auto` (default) continues from RUN's newest sound checkpoint: model, optimizer,
schedule, data position and RNG. SIGTERM or SIGUSR1 makes all ranks stop at the same step
boundary, checkpoint, and exit with status 75 (EXIT_STOPPED), for Slurm to requeue.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hvdlm import checkpoint, cli, data, distributed, faults, malloc
from hvdlm.config import Config, TrainConfig, load_config, to_toml
from hvdlm.errors import HvdlmError, UsageError
from hvdlm.evaluate import score_windows
from hvdlm.models import build_model, count_parameters
from hvdlm.runlog import MetricsWriter, log, log_to_file, setup_logging
from hvdlm.tokenizer import load_tokenizer

EXIT_STOPPED = 75  # stopped on request after writing a checkpoint: resume with --resume auto


def lr_at(step: int, t: TrainConfig) -> float:
    """Linear warm-up to `lr`, then cosine decay to `min_lr` at `max_steps`."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (not on biases, LayerNorm gains or ... vectors)."""
    params = dict(model.named_parameters())  # tied weights appear once
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=t.lr, betas=(t.beta1, t.beta2))


class StopRequest:
    """Remembers SIGTERM/SIGUSR1; the loop all-reduces the flag so every rank stops together."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame) -> None:
        self.signal = signum


class StepStats:
    """The per-step all-reduce of (loss, stop flag), read one step late.

    A synchronous collective after every optimizer step makes each step wait for the slowest
    rank twice and pay Horovod's coordination cycle once more; started asynchronously it runs
    in Horovod's background thread behind the next step's forward pass. Every rank reads the
    same results at the same steps, so all of them still stop at the same step (one step after
    the signal) and log the same losses.
    """

    def __init__(self) -> None:
        self._inflight: deque[Callable[[], torch.Tensor]] = deque()
        self._started = 0

    def start(self, loss: float, stop_requested: bool) -> None:
        # At most two in flight; Horovod needs distinct names for concurrent collectives.
        self._inflight.append(distributed.mean_async(
            torch.tensor([loss, float(stop_requested)]), name=f"step_stats.{self._started % 2}"))
        self._started += 1

    def read(self, latest: bool) -> tuple[float, bool]:
        """(mean loss, whether any rank asked to stop) over the results read now: all of them
        if `latest` (this step's loss), else all but the one just started."""
        loss, stop = math.nan, False
        while len(self._inflight) > (0 if latest else 1):
            loss, flag = self._inflight.popleft()().tolist()
            stop = stop or flag > 0
        return loss, stop


def _parse_args(argv: Sequence[str] | None):
    parser = cli.ArgumentParser(prog="hvdlm.train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder (manifest.json)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--config", help="TOML file with [model] and [train] tables")
    parser.add_argument("--resume", default="auto",
                        help="auto (newest checkpoint of --out, if any) | never | PATH")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    return parser.parse_args(argv)


def _resume_state(args, run: Path) -> tuple[Path, dict] | None:
    if args.resume == "never":
        if checkpoint.list_checkpoints(run):
            raise UsageError(f"{run} already has checkpoints: use --resume auto or another --out")
        return None
    if args.resume == "auto":
        return checkpoint.load_latest(run)
    return Path(args.resume), checkpoint.load(args.resume)


def _check_same_model(state: dict, cfg: Config, source: Path) -> None:
    if state["config"]["model"] != cfg.to_dict()["model"]:
        diff = [k for k, v in cfg.to_dict()["model"].items() if state["config"]["model"].get(k) != v]
        raise UsageError(f"{source}: checkpoint model differs from the config in "
                         f"{', '.join('model.' + k for k in diff)}")


class Trainer:
    """The training loop of one rank; `run()` returns the process exit status."""

    def __init__(self, args, cfg: Config, world: distributed.World):
        self.cfg, self.t, self.world = cfg, cfg.train, world
        self.run_dir = Path(args.out)
        manifest = data.open_dataset(args.data)
        cfg.model.vocab_size = manifest.vocab_size
        tokenizer = load_tokenizer(manifest.tokenizer_path)
        self.tokenizer_sha, self.tokenizer_file = tokenizer.sha256, manifest.tokenizer_path
        self.byte_lengths = torch.from_numpy(np.asarray(tokenizer.token_byte_lengths(), np.int64))
        self.train_set = data.TokenWindows(manifest, "train", cfg.model.seq_len)
        has_val = bool(manifest.splits.get("val")) and any(s.n_tokens > cfg.model.seq_len
                                                           for s in manifest.splits["val"])
        self.val_set = data.TokenWindows(manifest, "val", cfg.model.seq_len) if has_val else None

        torch.manual_seed(self.t.seed)  # identical init everywhere; rank 0's is broadcast anyway
        self.model = build_model(cfg.model).to(world.device)
        self.optimizer = distributed.wrap_optimizer(make_optimizer(self.model, self.t), self.model,
                                                    self.t.grad_accum, self.t.fp16_allreduce, world)
        self.step, self.consumed, self.resumed_from = 0, 0, None
        found = _resume_state(args, self.run_dir)
        if found is not None:
            self._restore(*found)
        else:
            distributed.broadcast_model(self.model)
            torch.manual_seed(self.t.seed + 1_000_003 * world.rank)  # per-rank dropout streams
        self.global_batch = self.t.micro_batch * self.t.grad_accum * world.size
        self.autocast = self.t.precision == "bf16"
        self.flops_per_token = self.model.flops_per_token()
        self.stop = StopRequest()
        self.bad_steps = 0

    def _restore(self, path: Path, state: dict) -> None:
        _check_same_model(state, self.cfg, path)
        checkpoint.require_tokenizer(state, self.tokenizer_sha, self.tokenizer_file)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # after wrapping: the wrap drops state
        self.step, self.consumed = int(state["step"]), int(state["consumed_samples"])
        self.resumed_from = self.step
        rng = state.get("rng") or []
        if len(rng) == self.world.size:
            torch.set_rng_state(rng[self.world.rank])
        else:  # another world size: a fresh, still deterministic, per-rank stream
            torch.manual_seed(self.t.seed + 1_000_003 * self.world.rank + self.step)
        log.info("resumed from %s (step %d, %d samples consumed)", path, self.step, self.consumed)

    def save(self) -> Path | None:
        rng = distributed.gather_object(torch.get_rng_state(), name="rng_states")
        if not self.world.is_main:
            return None
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "step": self.step, "consumed_samples": self.consumed, "rng": rng,
                 "config": self.cfg.to_dict(), "tokenizer_sha256": self.tokenizer_sha,
                 "world_size": self.world.size}
        path = checkpoint.save(self.run_dir, state, self.t.keep_checkpoints)
        log.info("saved %s", path)
        return path

    def evaluate(self, max_batches: int) -> dict[str, float] | None:
        if self.val_set is None:
            return None
        batches = data.EvalBatches(len(self.val_set), self.t.micro_batch, self.world.rank,
                                   self.world.size, max_batches)
        return score_windows(self.model, data.loader(self.val_set, batches, 0), self.byte_lengths,
                             self.world.device, self.autocast,
                             reduce=lambda t: distributed.sum_(t, name="eval_totals"))

    def _train_step(self, micro_batches) -> tuple[float, float, bool]:
        loss_sum = 0.0
        for _ in range(self.t.grad_accum):
            window = next(micro_batches).to(self.world.device, non_blocking=True)
            x, y = window[:, :-1], window[:, 1:]
            with torch.autocast(self.world.device.type, dtype=torch.bfloat16,
                                enabled=self.autocast):
                logits = self.model(x)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
            loss = loss * faults.loss_scale(self.world.rank, self.step)
            (loss / self.t.grad_accum).backward()
            loss_sum += loss.item()
        norm, stepped = distributed.clip_and_step(self.optimizer, self.model.parameters(),
                                                  self.t.grad_clip)
        return loss_sum / self.t.grad_accum, norm, stepped

    def run(self) -> int:
        t, world = self.t, self.world
        writer = MetricsWriter(self.run_dir) if world.is_main else None
        log.info("world size %d (rank %d, %s, %d threads); %s, %.2fM parameters; global batch %d",
                 world.size, world.rank, world.device, torch.get_num_threads(),
                 self.cfg.model.arch, count_parameters(self.model) / 1e6, self.global_batch)
        sampler = data.TrainBatches(
            data.GlobalOrder(len(self.train_set), t.seed), start_sample=self.consumed,
            start_step=self.step, max_steps=t.max_steps, micro_batch=t.micro_batch,
            grad_accum=t.grad_accum, rank=world.rank, world_size=world.size)
        micro_batches = iter(data.loader(self.train_set, sampler, t.num_workers))
        bar = tqdm(total=t.max_steps, initial=self.step, disable=not world.is_main,
                   dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
        tick, steps_since, exit_code = time.perf_counter(), 0, 0
        first_record = {"resumed_from": self.resumed_from} if self.resumed_from is not None else {}
        self.model.train()
        stats = StepStats()
        while self.step < t.max_steps:
            faults.maybe_kill(world.rank, self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, t)
            loss, norm, stepped = self._train_step(micro_batches)
            self._count_bad_step(stepped, norm)
            self.step += 1
            self.consumed += self.global_batch
            steps_since += 1
            bar.update(1)
            logging_now = self.step % t.log_interval == 0 or self.step == t.max_steps
            stats.start(loss, self.stop.signal is not None)
            mean_loss, stop = stats.read(latest=logging_now)
            if logging_now:
                elapsed = time.perf_counter() - tick
                tps = steps_since * self.global_batch * self.cfg.model.seq_len / elapsed
                record = {"step": self.step, "loss": mean_loss, "lr": lr_at(self.step - 1, t),
                          "tokens_per_s": tps, "grad_norm": norm, **first_record}
                if world.device.type == "cuda":
                    record["mfu"] = self.flops_per_token * tps / (t.peak_flops * world.size)
                first_record = {}
                if writer:
                    writer.write(record)
                bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tps:,.0f}")
                tick, steps_since = time.perf_counter(), 0
            if self.step % t.eval_interval == 0 or self.step == t.max_steps:
                self._log_eval(writer, t.eval_batches)
            if stop:
                stats.read(latest=True)  # nothing left in flight
                log.warning("stop requested (signal); checkpointing at step %d", self.step)
                self.save()
                # Nobody exits (non-zero) before rank 0's checkpoint is on disk: launchers end
                # the whole job as soon as one rank exits with an error status.
                distributed.barrier()
                exit_code = EXIT_STOPPED
                break
            if self.step % t.ckpt_interval == 0 or self.step == t.max_steps:
                self.save()
        bar.close()
        if writer:
            writer.close()
        if exit_code == 0:
            log.info("finished: step %d of %d", self.step, t.max_steps)
        return exit_code

    def _log_eval(self, writer: MetricsWriter | None, max_batches: int) -> None:
        scores = self.evaluate(max_batches)
        if scores is None:
            return
        log.info("step %d: val loss %.4f, perplexity %.2f, bits/byte %.4f, accuracy %.4f",
                 self.step, scores["loss"], scores["perplexity"], scores["bits_per_byte"],
                 scores["accuracy"])
        if writer:
            writer.write({"step": self.step, **{f"val_{k}": v for k, v in scores.items()}})

    def _count_bad_step(self, stepped: bool, norm: float) -> None:
        if stepped:
            return
        self.bad_steps += 1
        log.warning("step %d: non-finite gradient norm (%s); step skipped on all ranks (%d of %d "
                    "allowed)", self.step, norm, self.bad_steps, self.t.max_bad_steps)
        if self.bad_steps > self.t.max_bad_steps:
            last = checkpoint.list_checkpoints(self.run_dir)
            where = f"last good checkpoint: {last[-1]}" if last else "no checkpoint was written"
            raise HvdlmError(f"more than train.max_bad_steps={self.t.max_bad_steps} non-finite "
                             f"steps; stopping at step {self.step} ({where})")


def _main(argv: Sequence[str] | None) -> int:
    args = _parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    world = distributed.init(cfg.train.device)
    if world.device.type == "cpu":
        malloc.keep_freed_memory()  # no page faults on every step's activations
    setup_logging(world.rank)
    trainer = Trainer(args, cfg, world)  # checks data, config and checkpoint before RUN is touched
    if world.is_main:
        run = Path(args.out)
        run.mkdir(parents=True, exist_ok=True)
        log_to_file(run / "log.txt")
        (run / "config.toml").write_text(to_toml(cfg))
        (run / "data_dir.txt").write_text(str(Path(args.data).resolve()) + "\n")
    return trainer.run()


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv, prog="hvdlm.train")


if __name__ == "__main__":
    sys.exit(main())
