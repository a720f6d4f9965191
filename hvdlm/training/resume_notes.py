"""What a resume changes: the checkpoint's training settings against the ones it resumes with.

    hvdlm.train --data DATA --out RUN --resume auto train.max_steps=150

The trainer logs these as warnings (console and RUN/log.txt) when it resumes. The model's shape
is not here: a different shape is refused (Trainer.restore). Each note names old -> new and
what it does to the run, e.g.

    train.max_steps 100 -> 150: the cosine schedule now ends at 150: the learning rate at step
    100 rises from 3.0e-04 to 9.1e-04 (to keep the old decay: train.schedule_steps=100)
"""
from __future__ import annotations

from pathlib import Path

from hvdlm import untrusted
from hvdlm.config import Config, TrainConfig
from hvdlm.training.optim import lr_at

SCHEDULE = ("lr", "min_lr", "warmup_steps", "max_steps", "schedule_steps")
BATCH = ("micro_batch", "grad_accum", "global_batch")
# Settings whose change is worth a warning of its own, with what it does.
EFFECTS = {
    "seed": "the order of the remaining samples and the dropout streams change",
    "weight_decay": "the optimizer's decay changes from this step on",
    "beta1": "AdamW's moments now decay at another rate",
    "beta2": "AdamW's moments now decay at another rate",
    "grad_clip": "gradients are clipped at another norm",
    "precision": "the arithmetic changes (the loss scale starts afresh for fp16)",
    "fp16_allreduce": "gradients cross the network at another precision",
}


def _changed(old: TrainConfig, new: TrainConfig, keys) -> list[str]:
    return [f"train.{k} {getattr(old, k)} -> {getattr(new, k)}" for k in keys
            if getattr(old, k) != getattr(new, k)]


def schedule(old: TrainConfig, new: TrainConfig, step: int) -> list[str]:
    """The schedule keys that differ, and the learning rate they give at `step`."""
    changed = _changed(old, new, SCHEDULE)
    if not changed:
        return []
    before, after = lr_at(step, old), lr_at(step, new)
    end_old, end_new = old.schedule_steps or old.max_steps, new.schedule_steps or new.max_steps
    what = f"the cosine schedule now ends at {end_new}: " if end_old != end_new else ""
    verb = "rises" if after > before else "falls" if after < before else "stays"
    rate = (f"the learning rate at step {step} {verb} from {before:.1e} to {after:.1e}"
            if verb != "stays" else f"the learning rate at step {step} stays {after:.1e}")
    hint = ""
    if end_new > end_old and not new.schedule_steps and step >= old.warmup_steps:
        hint = f" (to keep the old decay: train.schedule_steps={end_old})"
    return [f"{', '.join(changed)}: {what}{rate}{hint}"]


def batch(old: TrainConfig, old_world: int, new: TrainConfig, new_world: int) -> list[str]:
    """The global batch and the world size, old -> new."""
    before = old.micro_batch * old.grad_accum * old_world
    after = new.micro_batch * new.grad_accum * new_world
    world = f"world size {old_world} -> {new_world}" if old_world != new_world else ""
    if before == after:
        return [f"{world}: the global batch stays {after} (train.grad_accum "
                f"{old.grad_accum} -> {new.grad_accum})"] if world else []
    parts = [p for p in (world, *_changed(old, new, BATCH)) if p]
    return [f"{', '.join(parts)}: the global batch changes from {before} to {after} windows a "
            f"step (gradients average over another number of samples; set "
            f"train.global_batch={before} to keep it on any number of ranks)"]


def data(run_dir: Path, data_dir: Path) -> list[str]:
    """The dataset of the last start (RUN/data_dir.txt) against this one."""
    record = run_dir / "data_dir.txt"
    if not record.is_file():
        return []
    before = untrusted.read_text(record, 64 << 10, "run record", follow=False).strip()
    after = str(data_dir.resolve())
    if before == after:
        return []
    return [f"data {before} -> {after}: the run goes on with the new dataset's windows, at the "
            "same position of its seeded order (samples already consumed are not re-counted)"]


def changes(old: Config, old_world: int, new: Config, new_world: int, step: int,
            run_dir: Path, data_dir: Path) -> list[str]:
    """One warning a changed setting (or group of settings), old -> new and what it does."""
    notes = schedule(old.train, new.train, step) + batch(old.train, old_world, new.train,
                                                        new_world)
    notes += [f"{c}: {EFFECTS[k]}" for k in EFFECTS for c in _changed(old.train, new.train, [k])]
    return notes + data(run_dir, data_dir)
