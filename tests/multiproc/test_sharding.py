"""train.shard_optimizer under real Horovod ranks (Gloo, CPU), against stage 0's runs.

  stages 1 and 2 == stage 0 after 20 steps     2 and 4 ranks, clipping active, grad_accum 2
  non-finite steps                              skipped on every rank together, as stage 0
  resume                                        bitwise on the same world size; within the
                                                world-size bound on 4 ranks; into stage 0
  AdamW state per rank                          1/N of stage 0's, measured from its tensors

    .venv/bin/python -m pytest tests/multiproc/test_sharding.py
"""
import re
import sys

import pytest

from tests.conftest import horovodrun, logged_steps
from tests.multiproc.test_train import TINY, final_params, flat, train

pytestmark = pytest.mark.horovod

STEPS = ["train.max_steps=20", "train.ckpt_interval=10", "train.eval_interval=20",
         "model.dropout=0.0", "train.precision=fp32", "train.grad_accum=2",
         "train.grad_clip=0.5"]
BATCH = {2: "train.micro_batch=4", 4: "train.micro_batch=2"}  # global batch 16 on both
EQUAL = 1e-6          # the bound between stages, fp32
OTHER_WORLD = 1e-5    # 2 ranks against 4 (tests/multiproc/test_exactness.py's bound)


@pytest.fixture(scope="module")
def runs(byte_dataset, tmp_path_factory):
    """runs(np, stage, *overrides): a 20-step run, made once per module."""
    root, made = tmp_path_factory.mktemp("sharding"), {}

    def make(np_, stage, *overrides, env=None):
        key = (np_, stage, *overrides, *sorted((env or {}).items()))
        if key not in made:
            made[key] = root / f"run{len(made)}"
            train(np_, byte_dataset, made[key], *STEPS, BATCH[np_],
                  f"train.shard_optimizer={stage}", *overrides, env=env)
        return made[key]
    return make


def relative(a, b):
    return ((a - b).norm() / a.norm()).item()


@pytest.mark.parametrize("np_", [2, 4])
def test_stages_1_and_2_give_stage_0s_parameters(runs, np_):
    reference = runs(np_, 0)
    norms = [r["grad_norm"] for r in logged_steps(reference)]
    assert len(norms) == 20 and min(norms) > 0.5  # clipping acts on every step
    for stage in (1, 2):
        run = runs(np_, stage)
        for a, b in zip(logged_steps(reference), logged_steps(run), strict=True):
            assert abs(a["grad_norm"] - b["grad_norm"]) <= EQUAL * a["grad_norm"], (stage, a, b)
        off = relative(flat(final_params(reference, 20)), flat(final_params(run, 20)))
        assert off <= EQUAL, (stage, off)


def test_non_finite_steps_are_skipped_on_every_rank_together(runs):
    fault = {"HVDLM_FAULT_NONFINITE": "1:4,0:9"}
    reference, run = runs(2, 0, env=fault), runs(2, 2, env=fault)
    log = (run / "log.txt").read_text()
    assert log.count("step skipped on all ranks") == 2, log
    assert relative(flat(final_params(reference, 20)), flat(final_params(run, 20))) <= EQUAL
    assert relative(flat(final_params(runs(2, 0), 20)), flat(final_params(run, 20))) > 1e-4


def resume(byte_dataset, whole, out, np_, stage):
    train(np_, byte_dataset, out, *STEPS, BATCH[np_], f"train.shard_optimizer={stage}",
          "--resume", whole / "checkpoints" / "step-00000010.pt")
    return flat(final_params(out, 20))


def test_resume_is_bitwise_on_the_same_world_size(runs, byte_dataset, tmp_path):
    whole = runs(2, 2)
    assert resume(byte_dataset, whole, tmp_path / "r", 2, 2).equal(flat(final_params(whole, 20)))


@pytest.mark.parametrize("np_,stage,bound", [(4, 2, OTHER_WORLD), (2, 0, EQUAL)])
def test_resume_on_another_world_size_or_stage(runs, byte_dataset, tmp_path, np_, stage, bound):
    whole = runs(2, 2)
    got = resume(byte_dataset, whole, tmp_path / "r", np_, stage)
    assert relative(flat(final_params(whole, 20)), got) <= bound


def state_bytes(byte_dataset, out, np_, stage):
    proc = horovodrun(np_, sys.executable, "-m", "tests.multiproc.sharding_check", byte_dataset,
                      out, *TINY, "train.max_steps=1", f"train.shard_optimizer={stage}",
                      timeout=240)
    found = re.findall(r"rank (\d): state bytes (\d+) parameters (\d+)", proc.stdout)
    assert len(found) == np_, proc.stdout
    return [int(b) for _, b, _ in sorted(found)], int(found[0][2])


def test_each_rank_holds_one_nth_of_the_optimizer_state(byte_dataset, tmp_path):
    whole, n_params = state_bytes(byte_dataset, tmp_path / "s0", 2, 0)
    assert whole == [8 * n_params] * 2
    sharded, _ = state_bytes(byte_dataset, tmp_path / "s2", 4, 2)
    assert sum(sharded) == whole[0]  # the padding (under 4 elements) holds no state
    for got in sharded:
        assert abs(got - whole[0] / 4) <= 8 * 4, (got, whole[0])
