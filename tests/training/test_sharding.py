"""training/sharding.py in one process: the layout, and N ranks simulated by threads whose
collectives meet at a barrier, against one AdamW stepping the averaged gradients.

    .venv/bin/python -m pytest tests/training/test_sharding.py -q
(the same under real Horovod ranks: tests/multiproc/test_sharding.py)
"""
import copy
import threading

import pytest
import torch

from hvdlm.config import TrainConfig
from hvdlm.training.optim import make_optimizer
from hvdlm.training.sharding import Layout, ShardedAdamW

CFG = TrainConfig(lr=1e-2, weight_decay=0.1)


class Ranks:
    """Collectives among `n` threads: each call is an exchange of every rank's value."""

    def __init__(self, n):
        self.n, self.barrier, self.slots = n, threading.Barrier(n, timeout=30), [None] * n

    def exchange(self, rank, value):
        self.slots[rank] = value
        self.barrier.wait()
        seen = list(self.slots)
        self.barrier.wait()
        return seen


class Comm:
    def __init__(self, ranks, rank):
        self.ranks, self.rank = ranks, rank

    def mean(self, flat):
        return torch.stack(self.ranks.exchange(self.rank, flat)).mean(0)

    def mean_slice(self, flat):
        return self.mean(flat).chunk(self.ranks.n)[self.rank].clone()

    def gather(self, slices):
        seen = self.ranks.exchange(self.rank, slices)
        return [torch.cat([s[i] for s in seen]) for i in range(len(slices))]

    def total(self, value):
        return torch.stack(self.ranks.exchange(self.rank, value)).sum(0)


def build():  # 7 x 5 + 5 + 5 + 5 x 3 + 3 = 63 parameters: odd, so padded on 2 and 4 ranks
    return torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.LayerNorm(5),
                               torch.nn.Linear(5, 3))


torch.manual_seed(0)
INIT = build().state_dict()


def model():
    """The same initial weights in every thread (torch's global generator is shared)."""
    net = build()
    net.load_state_dict(INIT)
    return net


def batch(rank, step):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(4, 7, generator=g)


def loss_of(net, x):
    return (net(x) ** 2).mean() * 50  # large enough that clipping at 1.0 is active


def reference(n, steps, max_norm=1.0):
    net = model()
    opt = make_optimizer(net, CFG)
    norms = []
    for step in range(steps):
        grads = []
        for rank in range(n):
            net.zero_grad()
            loss_of(net, batch(rank, step)).backward()
            grads.append([p.grad.clone() for p in net.parameters()])
        for p, *gs in zip(net.parameters(), *grads):
            p.grad = torch.stack(gs).mean(0)
        norms.append(torch.nn.utils.clip_grad_norm_(list(net.parameters()), max_norm).item())
        opt.step()
    return net, opt, norms


def sharded(n, stage, steps, start=None, max_norm=1.0, first_step=0, scale=1.0):
    """Run `steps` steps on n simulated ranks; returns each rank's (model, optimizer, norms)."""
    ranks, out = Ranks(n), [None] * n

    def rank_main(rank):
        net = model()
        opt = ShardedAdamW(make_optimizer(net, CFG), stage, rank, n, Comm(ranks, rank))
        if start is not None:
            net.load_state_dict(start[0])
            opt.load_state_dict(copy.deepcopy(start[1]))
        norms = []
        for step in range(first_step, first_step + steps):
            (loss_of(net, batch(rank, step)) * scale).backward()
            norm, stepped = opt.clip_and_step(max_norm, scale, lambda overflow: not overflow)
            assert stepped
            norms.append(norm.item())
        out[rank] = (net, opt, norms, opt.state_dict())

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(o is not None for o in out), "a simulated rank failed"
    return out


def flat(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_layout_pads_to_a_multiple_of_the_ranks_and_covers_each_element_once():
    params = [torch.zeros(7, 5), torch.zeros(5), torch.zeros(3)]
    owned = []
    for rank in range(4):
        layout = Layout([params[:1], params[1:]], rank, 4)
        assert layout.numel == 43 and layout.padded == 44 and layout.slice_len == 11
        owned += [(p.group, i) for p in layout.pieces for i in range(p.start, p.stop)]
    assert sorted(i for _, i in owned) == list(range(43))  # the padding element is nobody's
    assert {i for g, i in owned if g == 0} == set(range(35))


@pytest.mark.parametrize("n,stage", [(2, 1), (2, 2), (3, 2), (4, 1), (4, 2)])
def test_sharded_steps_equal_one_adamw_on_the_averaged_gradients(n, stage):
    net, opt, norms = reference(n, steps=6)
    ranks = sharded(n, stage, steps=6)
    for got_net, _, got_norms, record in ranks:
        assert max(got_norms) > 1.0  # clipping was active
        assert got_norms == pytest.approx(norms, rel=1e-6)
        assert torch.allclose(flat(got_net), flat(net), rtol=0, atol=1e-6 * flat(net).abs().max())
    record, expected = ranks[0][3], opt.state_dict()
    assert record["param_groups"] == expected["param_groups"]
    for i, state in expected["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.allclose(record["state"][i][name], state[name], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("stage", [1, 2])
def test_a_loss_scale_is_taken_out_before_clipping(stage):
    net, _, norms = reference(2, steps=3)
    for got_net, _, got_norms, _ in sharded(2, stage, steps=3, scale=1024.0):
        assert got_norms == pytest.approx(norms, rel=1e-5)
        assert torch.allclose(flat(got_net), flat(net), rtol=0, atol=1e-5 * flat(net).abs().max())


def test_stage_1_on_two_ranks_is_the_plain_step_up_to_rounding():
    # Not bitwise: the norm over flat slices groups the sums differently from
    # clip_grad_norm_'s per-tensor norms, which shows with one intra-op thread (~1e-8).
    net, _, norms = reference(2, steps=4)
    for got_net, _, got_norms, _ in sharded(2, 1, steps=4):
        assert got_norms == pytest.approx(norms, rel=1e-6)
        assert (flat(got_net) - flat(net)).norm() <= 1e-6 * flat(net).norm()


def test_each_rank_holds_a_quarter_of_the_state_on_four_ranks():
    net, opt, _ = reference(4, steps=1)
    whole = sum(v.numel() * v.element_size() for s in opt.state.values()
                for v in s.values() if v.dim() > 0)
    per_rank = [o.state_bytes() for _, o, _, _ in sharded(4, 2, steps=1)]
    assert sum(per_rank) == whole  # the padding holds no state
    assert all(abs(b - whole / 4) <= 8 * 4 for b in per_rank), (per_rank, whole)


def test_a_record_resumes_bitwise_and_moves_between_world_sizes_unchanged():
    whole = sharded(4, 2, steps=4)
    half = sharded(4, 2, steps=2)
    start = (half[0][0].state_dict(), half[0][3])
    resumed = sharded(4, 2, steps=2, start=start, first_step=2)
    assert torch.equal(flat(resumed[0][0]), flat(whole[0][0]))
    assert resumed[0][3]["state"].keys() == whole[0][3]["state"].keys() == set(range(6))
    for i, state in whole[0][3]["state"].items():
        for name, value in state.items():
            assert torch.equal(resumed[0][3]["state"][i][name], value), (i, name)
    # loaded on 3 ranks at stage 1 and gathered again: the same record, bit for bit
    again = sharded(3, 1, steps=0, start=start)[2][3]
    for i, state in start[1]["state"].items():
        for name, value in state.items():
            assert torch.equal(again["state"][i][name], value), (i, name)


def test_the_memory_plan_divides_adamw_by_the_ranks_at_stages_1_and_2():
    from hvdlm.config import load_config
    from hvdlm.training.estimate import describe, estimate
    cfg = load_config(None, ["model.vocab_size=1000", "model.n_layer=2"])
    n = estimate(cfg).parameters
    assert estimate(cfg, 4, stage=0).optimizer == 8 * n
    for stage in (1, 2):
        e = estimate(cfg, 4, stage=stage)
        assert e.optimizer == 8 * -(-n // 4) and e.weights == e.gradients == 4 * n
    lines = describe(cfg, 4, "given").splitlines()
    assert any(line.startswith("# memory plan per rank on 4 ranks") for line in lines)
    stages = [line for line in lines if line.startswith("#   stage ")]
    assert len(stages) == 3 and "(this config)" in stages[0]
    assert all("with activation checkpointing" in line for line in stages)
    assert "after the reduce-scatter" in stages[2]
