"""The training loop of one rank, built from a config and explicit paths.

    Trainer(cfg, data_dir, run_dir, world).run()      (`train()` adds the process set-up)

Each optimizer step consumes the next G = micro_batch x grad_accum x world_size samples of a
seeded global order (data.py), so results do not depend on how G is split over ranks. Resume
restores one `TrainingState`: model, optimizer, step, data position, RNG and fp16's loss scale.
SIGTERM or SIGUSR1 makes all ranks stop at the same step boundary, checkpoint, and return
EXIT_STOPPED. Callbacks see every step (fault injection, benchmark clocks) without touching the
loop.

On a GPU: the model is compiled (train.compile; the optimizer step is not, so Horovod's
gradient hooks still fire, and the state dict is the uncompiled module's), fp16 scales its loss
(training/precision.py), batches come from pinned memory, and the loss and gradient norm are
read to the host only at log steps.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

import torch

from hvdlm.cluster import distributed
from hvdlm.config import Config, config_from_dict, for_world_size, to_toml
from hvdlm.errors import EXIT_STOPPED, HvdlmError, UsageError
from hvdlm.models import build_model, count_parameters
from hvdlm.models import vocab
from hvdlm.training import checkpoint, data, malloc, precision, resume_notes
from hvdlm.training.record import files as runfiles, provenance, wandb_mirror
from hvdlm.training.checkpoint import TrainingState
from hvdlm.training.init_from import check_shapes, initial_weights
from hvdlm.training.optim import lr_at, make_optimizer
from hvdlm.training.record.progress import Progress
from hvdlm.training.record.logs import MetricsWriter, log, log_to_file, setup_logging
from hvdlm.training.scoring import byte_lengths, score_windows, window_loss
from hvdlm.training.stored_config import non_finite


class Callback:
    """Hooks into the loop, called on every rank; override what you need."""

    def on_step_start(self, trainer: "Trainer") -> None:
        """Before the step's first micro-batch (trainer.step = steps done so far)."""

    def on_loss(self, trainer: "Trainer", loss: torch.Tensor) -> torch.Tensor:
        return loss  # each micro-batch's loss, before backward: the loss to use

    def on_step_end(self, trainer: "Trainer", loss: torch.Tensor) -> None:
        """After the optimizer step (trainer.step already counts it); `loss`, the step's mean
        on this rank, is still a tensor (reading it waits for the device)."""


class StopRequest:
    """Remembers SIGTERM/SIGUSR1; the loop all-reduces the flag so every rank stops together.

    The rank's half of the stop protocol; what happens after EXIT_STOPPED (requeue or not,
    for sbatch and submitit alike) is hvdlm/cluster/requeue.py's."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, lambda signum, _frame: setattr(self, "signal", signum))


class StepStats:
    """The per-step all-reduce of (loss, stop flag), read one step late.

    Started asynchronously, it runs in Horovod's background thread behind the next step's
    forward pass instead of making each step wait for the slowest rank once more. Every rank
    reads the same results at the same steps, so all still stop at the same step (one after
    the signal) and log the same losses.
    """

    def __init__(self, sync: bool = True) -> None:
        self.sync = sync  # False: each rank keeps its own (benchmarks only)
        self._inflight: deque[Callable[[], torch.Tensor]] = deque()
        self._started = 0

    def start(self, loss: torch.Tensor | None, stop_requested: bool) -> None:
        """`loss` only at log steps: reading it to the host waits for the device."""
        values = torch.tensor([math.nan if loss is None else loss.item(), float(stop_requested)],
                              dtype=torch.float64)
        # At most two in flight; Horovod needs distinct names for concurrent collectives.
        self._inflight.append(distributed.mean_async(values, f"step_stats.{self._started % 2}")
                              if self.sync else lambda: values)
        self._started += 1

    def read(self, latest: bool) -> tuple[float, bool]:
        """(mean loss, whether any rank asked to stop) over the results read now: all of them
        if `latest` (this step's loss), else all but the one just started."""
        loss, stop = math.nan, False
        while len(self._inflight) > (0 if latest else 1):
            loss, flag = self._inflight.popleft()().tolist()
            stop = stop or flag > 0
        return loss, stop


class Trainer:
    """One rank's training run; `run()` returns the process exit status.

    sync_gradients / sync_step_stats: False leaves out the gradient allreduce or the per-step
    metrics allreduce, for benchmarks that measure what each costs (the ranks then drift).
    """

    def __init__(self, cfg: Config, data_dir: str | Path, run_dir: str | Path,
                 world: distributed.World, resume: str = "auto",
                 callbacks: Sequence[Callback] = (), sync_gradients: bool = True,
                 sync_step_stats: bool = True):
        self.world, self.run_dir, self.data_dir = world, Path(run_dir), Path(data_dir)
        self.callbacks = list(callbacks)
        manifest = data.open_dataset(data_dir)
        model_cfg = dataclasses.replace(cfg.model, vocab_size=manifest.vocab_size)
        self.cfg = for_world_size(dataclasses.replace(cfg, model=model_cfg), world.size)
        self.t = t = self.cfg.train
        tokenizer = manifest.open_tokenizer()  # refused unless it matches the manifest
        self.tokenizer_sha, self.tokenizer_file = tokenizer.sha256, manifest.tokenizer_path
        self.token_bytes = byte_lengths(tokenizer)
        self.train_set = data.TokenWindows(manifest, "train", model_cfg.seq_len)
        has_val = any(s.n_tokens > model_cfg.seq_len for s in manifest.splits.get("val", []))
        self.val_set = data.TokenWindows(manifest, "val", model_cfg.seq_len) if has_val else None

        torch.manual_seed(t.seed)  # identical init everywhere; rank 0's is broadcast anyway
        self.model = build_model(model_cfg).to(world.device)
        if hasattr(self.model, "activation_checkpointing"):  # gpt and cnn
            self.model.activation_checkpointing = t.activation_checkpointing
        self.forward = compiled(self.model, t.compile, world.device)
        precision.use_tf32(world.device, t.tf32)
        self.scaler = precision.LossScaler(t.precision == "fp16", t.loss_scale_init,
                                           t.loss_scale_growth_interval)
        optimizer = make_optimizer(self.model, t)
        self.optimizer = distributed.wrap_optimizer(optimizer, self.model, t.grad_accum,
                                                    t.fp16_allreduce, world, t.shard_optimizer) \
            if sync_gradients else optimizer
        self.sync_step_stats = sync_step_stats
        self.step, self.consumed, self.resumed_from, self.notices = 0, 0, None, []
        found = self._checkpoint_to_resume(resume)
        if found is not None:
            self.restore(*found)
        else:
            if t.init_from:
                self._init_from(t.init_from)
            distributed.broadcast_model(self.model)
            torch.manual_seed(t.seed + 1_000_003 * world.rank)  # per-rank dropout streams
        self.sampler = data.TrainBatches(
            data.GlobalOrder(len(self.train_set), t.seed), start_sample=self.consumed,
            start_step=self.step, max_steps=t.max_steps, micro_batch=t.micro_batch,
            grad_accum=t.grad_accum, rank=world.rank, world_size=world.size)
        self.global_batch = self.sampler.global_batch
        self.autocast = precision.autocast_dtype(t.precision)
        self.flops_per_token = self.model.flops_per_token()
        self.stop = StopRequest()
        self.bad_steps = 0

    # ---- the training state: captured and restored as one record --------------------------

    def _checkpoint_to_resume(self, resume: str) -> tuple[Path, TrainingState] | None:
        if resume == "never":
            if checkpoint.list_checkpoints(self.run_dir):
                raise UsageError(f"{self.run_dir} already has checkpoints: use --resume auto "
                                 "or another --out")
            return None
        if resume == "auto":
            return checkpoint.load_latest(self.run_dir)
        return Path(resume), checkpoint.load(resume)

    def _init_from(self, path: str) -> None:
        state = initial_weights(path, self.cfg.model)  # refused in one line if shapes differ
        check_shapes(path, self.model, state)
        self.model.load_state_dict(state)
        log.info("weights from %s (train.init_from); step, optimizer and data start fresh", path)

    def capture(self) -> TrainingState | None:
        """This run's state on rank 0 (None elsewhere); every rank must call it."""
        rng = distributed.gather_tensor(torch.get_rng_state(), name="rng_states")
        optimizer = self.optimizer.state_dict()  # on every rank: a sharded one gathers
        if not self.world.is_main:
            return None
        return TrainingState(model=self.model.state_dict(), optimizer=optimizer, step=self.step,
                             consumed_samples=self.consumed, config=self.cfg.to_dict(),
                             tokenizer_sha256=self.tokenizer_sha, world_size=self.world.size,
                             rng=rng, scaler=self.scaler.state_dict() if self.scaler.enabled
                             else None)

    def restore(self, path: Path, state: TrainingState) -> None:
        expected = self.cfg.to_dict()["model"]
        # Keys added since the checkpoint was written take their defaults (as they were then).
        theirs = config_from_dict(state.config).to_dict()["model"]
        differ = [k for k, v in expected.items() if theirs[k] != v]
        if differ:
            changes = ", ".join(f"model.{k} {theirs[k]} -> {expected[k]}" for k in differ)
            raise UsageError(f"{path}: checkpoint model differs from the config in {changes}; "
                             "a model's shape cannot change on resume (leave those settings "
                             "out: --resume auto starts from RUN/config.toml)")
        state.require_tokenizer(self.tokenizer_sha, self.tokenizer_file)
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(pad_moments(state.optimizer, self.optimizer,
                                                   self.cfg.model.vocab_size))
        if state.scaler and self.scaler.enabled:
            self.scaler.load_state_dict(state.scaler)
        self.step, self.consumed = int(state.step), int(state.consumed_samples)
        self.resumed_from = self.step
        rng = state.rng or []
        if len(rng) == self.world.size:
            torch.set_rng_state(rng[self.world.rank].clone())  # a view would crash torch
        else:  # another world size: a fresh, still deterministic, per-rank stream
            torch.manual_seed(self.t.seed + 1_000_003 * self.world.rank + self.step)
        self.notices = [f"resumed from {path} (step {self.step}, {self.consumed} samples "
                        "consumed)", *resume_notes.changes(
                            config_from_dict(state.config), state.world_size, self.cfg,
                            self.world.size, self.step, self.run_dir, self.data_dir)]
        if self.world.is_main:
            checkpoint.adopt(self.run_dir, path)  # the next --resume auto continues from here

    def save(self) -> Path | None:
        state = self.capture()
        if state is None:
            return None
        if non_finite(state.model):  # never a checkpoint that the last good one would name
            log.warning("step %d: the weights hold NaN or inf; no checkpoint saved", self.step)
            return None
        path = checkpoint.save(self.run_dir, state, self.t.keep_checkpoints)
        log.info("saved %s", path)
        return path

    # ---- the loop --------------------------------------------------------------------------

    def evaluate(self, max_batches: int) -> dict[str, float] | None:
        if self.val_set is None:
            return None
        batches = data.EvalBatches(len(self.val_set), self.t.micro_batch, self.world.rank,
                                   self.world.size, max_batches)
        return score_windows(self.model, data.loader(self.val_set, batches, 0), self.token_bytes,
                             self.world.device, self.autocast,
                             reduce=lambda t: distributed.sum_(t, name="eval_totals"))

    def train_step(self, micro_batches) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """One optimizer step over grad_accum micro-batches: (mean loss, grad norm, stepped),
        the first two as tensors, read only where they are logged."""
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.world.device)
        for _ in range(self.t.grad_accum):
            window = next(micro_batches).to(self.world.device, non_blocking=True)
            loss, _, _ = window_loss(self.forward, window, self.autocast)
            for callback in self.callbacks:
                loss = callback.on_loss(self, loss)
            (self.scaler.scaled(loss) / self.t.grad_accum).backward()
            loss_sum += loss.detach().double()
        norm, stepped = distributed.clip_and_step(self.optimizer, self.model.parameters(),
                                                  self.t.grad_clip, self.scaler)
        return loss_sum / self.t.grad_accum, norm, stepped

    def run(self) -> int:
        t, world = self.t, self.world
        # Records after self.step are dropped: a resumed run writes those steps again.
        writer = MetricsWriter(self.run_dir, self.step, self.cfg.to_dict(),
                               wandb_mirror.mirrors(self.run_dir, self.cfg)) \
            if world.is_main else None
        log.info("world size %d (rank %d, %s, %d threads); %s, %.2fM parameters; global batch %d",
                 world.size, world.rank, world.device, torch.get_num_threads(),
                 self.cfg.model.arch, count_parameters(self.model) / 1e6, self.global_batch)
        for i, notice in enumerate(self.notices if world.is_main else []):  # log.txt is open
            (log.warning if i else log.info)("%s", notice)
        if self.forward is not self.model:
            log.info("model compiled with torch.compile (train.compile=%s)", t.compile)
        micro_batches = iter(data.loader(self.train_set, self.sampler, t.num_workers,
                                         pin_memory=world.device.type == "cuda"))
        progress = Progress(t.log_format, t.max_steps, self.step, world.is_main)
        tick, steps_since, exit_code = time.perf_counter(), 0, 0
        first_record = {"resumed_from": self.resumed_from} if self.resumed_from is not None else {}
        self.model.train()
        stats = StepStats(self.sync_step_stats)
        while self.step < t.max_steps:
            for callback in self.callbacks:
                callback.on_step_start(self)
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step, t)
            loss, norm, stepped = self.train_step(micro_batches)
            self._count_bad_step(stepped, norm)
            self.step += 1
            self.consumed += self.global_batch
            steps_since += 1
            progress.step_done()
            for callback in self.callbacks:
                callback.on_step_end(self, loss)
            logging_now = self.step % t.log_interval == 0 or self.step == t.max_steps
            stats.start(loss if logging_now else None, self.stop.signal is not None)
            mean_loss, stop = stats.read(latest=logging_now)
            if logging_now:
                elapsed = time.perf_counter() - tick
                tps = steps_since * self.global_batch * self.cfg.model.seq_len / elapsed
                record = {"step": self.step, "loss": mean_loss, "lr": lr_at(self.step - 1, t),
                          "tokens_per_s": tps, "grad_norm": norm.item(), **first_record,
                          "epoch": self.consumed / len(self.train_set)}  # passes over train
                if self.scaler.enabled:
                    record.update(loss_scale=self.scaler.scale, overflows=self.scaler.overflows)
                if world.device.type == "cuda":
                    record["mfu"] = self.flops_per_token * tps / (t.peak_flops * world.size)
                first_record = {}
                if writer:
                    writer.write(record)
                progress.report(record, elapsed / steps_since)
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
        progress.close()
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

    def _count_bad_step(self, stepped: bool, norm: torch.Tensor) -> None:
        at_minimum = self.scaler.at_minimum
        self.scaler.update(overflow=not stepped)  # the same on every rank: they agreed
        if stepped:
            return
        if self.scaler.enabled and not at_minimum:
            log.warning("step %d: fp16 gradient overflow; step skipped on all ranks, loss scale "
                        "now %g (%d overflows so far)", self.step, self.scaler.scale,
                        self.scaler.overflows)
            return
        self.bad_steps += 1
        log.warning("step %d: non-finite gradient norm (%s); step skipped on all ranks (%d of %d "
                    "allowed)", self.step, norm.item(), self.bad_steps, self.t.max_bad_steps)
        if self.bad_steps > self.t.max_bad_steps:
            last = checkpoint.list_checkpoints(self.run_dir)
            where = f"last good checkpoint: {last[-1]}" if last else "no checkpoint was written"
            raise HvdlmError(f"more than train.max_bad_steps={self.t.max_bad_steps} non-finite "
                             f"steps; stopping at step {self.step} ({where})")


def compiled(model: torch.nn.Module, setting: str, device: torch.device):
    """The module the training steps call: `model` itself, or torch.compile's wrapper of it
    (train.compile: auto = on for CUDA). The wrapper shares the parameters, so the optimizer,
    Horovod's hooks and the checkpoints keep using `model` and its plain state dict."""
    if setting == "true" or (setting == "auto" and device.type == "cuda"):
        return torch.compile(model)
    return model


def pad_moments(state: dict, optimizer: torch.optim.Optimizer, vocab_size: int) -> dict:
    """An optimizer state dict whose moments fit the parameters: a checkpoint from before the
    vocabulary was padded has vocab_size rows where the model now has more (models/vocab.py)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, moments in state["state"].items():
        for name, value in moments.items():
            if torch.is_tensor(value) and value.shape != params[int(index)].shape:
                moments[name] = vocab.pad_rows(value, vocab_size)
    return state


def train(cfg: Config, data_dir: str | Path, run_dir: str | Path, resume: str = "auto",
          callbacks: Sequence[Callback] = (), **trainer_options: bool) -> int:
    """A rank's whole run: Horovod, threads and memory, logging, the run folder, the loop."""
    # Refuses wrong launches, locks RUN, shares the cores between local ranks.
    world = distributed.init(cfg.train.device, run_dir, pin_cores=cfg.train.pin_cores,
                             shared_run_dir=cfg.train.shared_run_dir)
    if world.device.type == "cpu" and cfg.train.keep_freed_memory:
        malloc.keep_freed_memory()  # no page faults on every step's activations
    setup_logging(world.rank)
    # Under the lock, the trainer checks data, config and checkpoint before RUN is written.
    trainer = Trainer(cfg, data_dir, run_dir, world, resume, callbacks, **trainer_options)
    start = provenance.describe(world)  # every rank: the hostnames are gathered
    if world.is_main:
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        log_to_file(run / "log.txt")
        runfiles.record_start(run, start, trainer.cfg.to_dict(), to_toml(trainer.cfg), data_dir,
                              trainer.tokenizer_file)
    return trainer.run()
