"""The order invariants of hvdlm.training.data, proved directly on small real HDF5 datasets:
shard boundaries, epochs, world-size independence, resume position, evaluation strides.

    .venv/bin/python -m pytest tests/training/test_data.py
"""
from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvdlm.errors import DataError, UsageError
from hvdlm.text import shards
from hvdlm.training.data import (EvalBatches, GlobalOrder, InlineLoader, TokenWindows, TrainBatches,
                                 loader, open_dataset)

VOCAB = 4096
SPREAD = 256  # shard k's tokens are k*SPREAD + (0..SPREAD-1): a window that crossed shows it


def shard_tokens(k: int, n: int) -> np.ndarray:
    return (k * SPREAD + np.arange(n) % SPREAD).astype(np.int64)


def make_dataset(root: Path, lengths: dict[str, list[int]]) -> shards.Manifest:
    """A dataset whose split `s` has shards of `lengths[s]` tokens, written by ShardWriter."""
    manifest = shards.Manifest(root=root, tokenizer="tokenizer.json", vocab_size=VOCAB,
                               eos_id=VOCAB - 1, dtype=shards.dtype_for_vocab(VOCAB))
    for split, sizes in lengths.items():
        writer = shards.ShardWriter(root, split, shard_tokens=1, vocab_size=VOCAB,
                                    eos_id=VOCAB - 1, tokenizer_sha256="0" * 64)
        for k, n in enumerate(sizes):
            writer.add(shard_tokens(k, n), n_bytes=n)  # shard_tokens=1: one document a shard
        writer.flush()
        manifest.splits[split] = writer.shards
    shards.save_manifest(manifest)
    return open_dataset(root)  # read back: what the trainer sees


def raw_windows(lengths: list[int], seq_len: int) -> list[np.ndarray]:
    """Every window, in id order, cut from the raw token arrays without hvdlm's help."""
    out = []
    for k, n in enumerate(lengths):
        tokens = shard_tokens(k, n)
        begin = 0
        while begin + seq_len + 1 <= n:
            out.append(tokens[begin:begin + seq_len + 1])
            begin += seq_len
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> shards.Manifest:
    # 0-window shards (shorter than seq_len + 1), an exact fit (4*8+1) and one token short (4*8).
    return make_dataset(tmp_path_factory.mktemp("windows"),
                        {"train": [100, 5, 33, 32, 257, 9, 70], "val": [41, 17, 90]})


# -- shard boundaries ---------------------------------------------------------------------------

def check_windows(windows: TokenWindows, lengths: list[int], seq_len: int) -> None:
    expected = raw_windows(lengths, seq_len)
    assert len(windows) == len(expected) == sum(max(0, (n - 1) // seq_len) for n in lengths)
    starts = np.cumsum([0] + [max(0, (n - 1) // seq_len) for n in lengths])
    for i, want in enumerate(expected):
        got = windows[i].numpy()
        assert got.shape == (seq_len + 1,)
        assert np.array_equal(got, want), f"window {i}"
        shard = int(np.searchsorted(starts, i, side="right") - 1)
        assert set((got // SPREAD).tolist()) == {shard}, f"window {i} crosses a shard boundary"
        local = i - starts[shard]
        assert got[0] % SPREAD == (local * seq_len) % SPREAD  # window j of shard k starts at j·T


@pytest.mark.parametrize("seq_len", [1, 4, 8, 31, 32, 99])
def test_windows_are_cut_from_one_shard_each(dataset, seq_len):
    lengths = [s.n_tokens for s in dataset.splits["train"]]
    check_windows(TokenWindows(dataset, "train", seq_len), lengths, seq_len)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=st.lists(st.integers(1, 120), min_size=1, max_size=6),
       seq_len=st.integers(1, 40))
def test_windows_any_shard_sizes(lengths, seq_len):
    if all((n - 1) // seq_len == 0 for n in lengths):
        lengths = lengths + [seq_len + 1]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_dataset(Path(tmp), {"train": lengths})
        windows = TokenWindows(manifest, "train", seq_len)
        check_windows(windows, lengths, seq_len)
        ids = list(np.random.default_rng(seq_len).integers(0, len(windows), 2 * len(windows)))
        batch = windows.__getitems__(ids)  # the vectorised path, any order, repeats
        assert torch.equal(batch, torch.stack([windows[i] for i in ids]))
        del windows  # close the memory maps before the folder goes


def test_windows_survive_pickling_without_their_maps(dataset):
    windows = TokenWindows(dataset, "val", 8)
    first = windows[3]
    assert windows._maps  # opened lazily by the read above
    clone = pickle.loads(pickle.dumps(windows))
    assert clone._maps == {} and torch.equal(clone[3], first)


def test_no_window_is_a_usage_error_and_a_missing_split_a_data_error(dataset):
    with pytest.raises(UsageError, match=r"model.seq_len \(300\) leaves no window.*257 tokens"):
        TokenWindows(dataset, "train", 300)
    with pytest.raises(DataError, match="split 'test' has no shards"):
        TokenWindows(dataset, "test", 8)


# -- epochs -------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), seed=st.integers(0, 2**31), epochs=st.integers(1, 4))
def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch(n, seed, epochs):
    order = GlobalOrder(n, seed)
    perms = [order.window_ids(e * n, n).copy() for e in range(epochs)]
    for perm in perms:
        assert sorted(perm.tolist()) == list(range(n))
    # Deterministic: a fresh order (another process, another rank) and reads in any order agree.
    again = GlobalOrder(n, seed)
    for e in reversed(range(epochs)):
        assert np.array_equal(again.window_ids(e * n, n), perms[e])
    # Global sample g is perm_e[g mod n], whichever slice it is read in (epochs crossed or not).
    stream = np.concatenate(perms)
    for first in range(0, epochs * n, max(1, n // 3)):
        for count in (1, n // 2 + 1, n + 3):
            count = min(count, epochs * n - first)
            assert np.array_equal(order.window_ids(first, count), stream[first:first + count])


def test_epochs_and_seeds_give_different_orders():
    n = 50
    a, b = GlobalOrder(n, 1), GlobalOrder(n, 2)
    epochs_a = {tuple(a.window_ids(e * n, n)) for e in range(6)}
    assert len(epochs_a) == 6  # every epoch its own order
    for e in range(6):
        assert not np.array_equal(a.window_ids(e * n, n), b.window_ids(e * n, n))
    assert tuple(range(n)) not in epochs_a  # shuffled, not file order


# -- world-size independence and resume ---------------------------------------------------------

def step_samples(order: GlobalOrder, G: int, world_size: int, grad_accum: int, max_steps: int,
                 start_step: int = 0, start_sample: int = 0) -> list[list[int]]:
    """For each step, the window ids all ranks read, rank 0's micro-batches first."""
    micro = G // world_size // grad_accum
    assert micro * world_size * grad_accum == G
    per_rank = []
    for rank in range(world_size):
        sampler = TrainBatches(order, start_sample=start_sample, start_step=start_step,
                               max_steps=max_steps, micro_batch=micro, grad_accum=grad_accum,
                               rank=rank, world_size=world_size)
        assert sampler.global_batch == G
        batches = list(sampler)
        assert len(batches) == len(sampler) == (max_steps - start_step) * grad_accum
        assert all(len(b) == micro for b in batches)
        per_rank.append([sum(batches[s * grad_accum:(s + 1) * grad_accum], [])
                         for s in range(max_steps - start_step)])
    return [sum((rank[s] for rank in per_rank), []) for s in range(max_steps - start_step)]


LAYOUTS = [(1, 1), (1, 2), (1, 8), (2, 1), (2, 2), (2, 4), (4, 1), (4, 2)]  # (W, grad_accum)


@pytest.mark.parametrize("world_size, grad_accum", LAYOUTS)
def test_union_over_ranks_is_the_one_rank_step(world_size, grad_accum):
    order, G, steps = GlobalOrder(21, seed=7), 8, 12  # 96 samples: several epochs, ragged ends
    reference = step_samples(order, G, 1, 1, steps)
    assert step_samples(GlobalOrder(21, seed=7), G, world_size, grad_accum, steps) == reference
    stream = GlobalOrder(21, seed=7).window_ids(0, G * steps).tolist()
    assert sum(reference, []) == stream  # step s is global samples [s·G, (s+1)·G)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 1000), log_w=st.integers(0, 2),
       log_a=st.integers(0, 2), micro=st.integers(1, 3), steps=st.integers(1, 8))
def test_world_size_independence_any_layout(n, seed, log_w, log_a, micro, steps):
    W, A = 2 ** log_w, 2 ** log_a
    G = W * A * micro
    expected = step_samples(GlobalOrder(n, seed), G, 1, 1, steps)
    assert step_samples(GlobalOrder(n, seed), G, W, A, steps) == expected


@pytest.mark.parametrize("first, then", [((1, 1), (1, 1)), ((1, 1), (4, 2)), ((4, 1), (2, 4)),
                                         ((2, 2), (1, 8))])
@pytest.mark.parametrize("resume_at", [1, 3, 5, 9])
def test_resume_is_the_tail_of_the_uninterrupted_run(first, then, resume_at):
    G, steps = 8, 10
    whole = step_samples(GlobalOrder(13, seed=3), G, *first, steps)
    # A new process: a fresh GlobalOrder, maybe another world size, from the checkpointed step.
    tail = step_samples(GlobalOrder(13, seed=3), G, *then, steps, start_step=resume_at,
                        start_sample=resume_at * G)
    assert tail == whole[resume_at:]


def test_resume_with_another_global_batch_continues_the_sample_stream():
    order = GlobalOrder(17, seed=5)
    before = step_samples(order, 8, 2, 2, 3)                        # 3 steps of G=8: 24 samples
    after = step_samples(GlobalOrder(17, seed=5), 12, 4, 1, 7, start_step=3, start_sample=24)
    assert sum(before + after, []) == GlobalOrder(17, seed=5).window_ids(0, 24 + 4 * 12).tolist()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loaded_tokens_are_the_same_on_any_world_size(dataset, num_workers):
    """Through the loader, on real shards: the ranks' token tensors of a step, stacked, are
    world size 1's tensor of that step."""
    windows = TokenWindows(dataset, "train", 16)
    G, steps, seed = 8, 4, 11

    def tensors(world_size, grad_accum, rank):
        sampler = TrainBatches(GlobalOrder(len(windows), seed), start_sample=0, start_step=0,
                               max_steps=steps, micro_batch=G // world_size // grad_accum,
                               grad_accum=grad_accum, rank=rank, world_size=world_size)
        got = list(loader(windows, sampler, num_workers))
        assert isinstance(got[0], torch.Tensor)
        return [torch.cat(got[s * grad_accum:(s + 1) * grad_accum]) for s in range(steps)]

    reference = tensors(1, 1, 0)
    raw = raw_windows([s.n_tokens for s in dataset.splits["train"]], 16)
    ids = GlobalOrder(len(windows), seed).window_ids(0, G * steps)
    assert np.array_equal(torch.cat(reference).numpy(), np.stack([raw[i] for i in ids]))
    for world_size, grad_accum in [(2, 1), (2, 2), (4, 2)]:
        per_rank = [tensors(world_size, grad_accum, r) for r in range(world_size)]
        for s in range(steps):
            assert torch.equal(torch.cat([p[s] for p in per_rank]), reference[s])


# -- evaluation ---------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 80), world_size=st.integers(1, 6), micro=st.integers(1, 9))
def test_eval_strides_cover_every_window_once(n, world_size, micro):
    seen = []
    for rank in range(world_size):
        batches = list(EvalBatches(n, micro, rank, world_size))
        assert len(batches) == len(EvalBatches(n, micro, rank, world_size))
        assert all(0 < len(b) <= micro for b in batches)
        assert all(len(b) == micro for b in batches[:-1])  # only the last may be short
        mine = sum(batches, [])
        assert mine == list(range(rank, n, world_size))  # file order, strided by rank
        seen += mine
    assert sorted(seen) == list(range(n))  # every window exactly once across ranks


def test_eval_max_batches_truncates_each_rank():
    assert list(EvalBatches(20, 3, 1, 2, max_batches=2)) == [[1, 3, 5], [7, 9, 11]]
    assert len(EvalBatches(20, 3, 1, 2, max_batches=99)) == 4


def test_eval_batches_read_the_split_in_file_order(dataset):
    windows = TokenWindows(dataset, "val", 8)
    raw = raw_windows([s.n_tokens for s in dataset.splits["val"]], 8)
    got = torch.cat(list(InlineLoader(windows, EvalBatches(len(windows), 4, 0, 1))))
    assert np.array_equal(got.numpy(), np.stack(raw))
