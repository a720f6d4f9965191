"""fp16's dynamic loss scale, the autocast choice and TF32 (hvdlm/training/precision.py), and
train.compile's choice; the multi-rank behaviour (the same step skipped on every rank, exact
resume, compiled against eager) is in tests/multiproc/test_gpu_path.py."""
import pytest
import torch

from hvdlm.training.precision import LossScaler, autocast_dtype


def test_autocast_choice():
    assert autocast_dtype("fp32") is False
    assert autocast_dtype("bf16") is torch.bfloat16
    assert autocast_dtype("fp16") is torch.float16


def test_the_scale_halves_on_overflow_and_grows_after_good_steps():
    scaler = LossScaler(True, init_scale=1024.0, growth_interval=3)
    scaler.update(overflow=True)
    assert (scaler.scale, scaler.overflows, scaler.good_steps) == (512.0, 1, 0)
    for _ in range(2):
        scaler.update(overflow=False)
    assert scaler.scale == 512.0          # 2 good steps: not yet
    scaler.update(overflow=False)
    assert (scaler.scale, scaler.good_steps) == (1024.0, 0)
    scaler.update(overflow=False)
    scaler.update(overflow=True)          # an overflow restarts the count
    assert (scaler.scale, scaler.good_steps, scaler.overflows) == (512.0, 0, 2)


def test_the_scale_stops_at_its_minimum_where_an_overflow_is_a_diverged_loss():
    scaler = LossScaler(True, init_scale=2.0, growth_interval=100)
    assert not scaler.at_minimum
    scaler.update(overflow=True)
    assert scaler.scale == 1.0 and scaler.at_minimum
    scaler.update(overflow=True)
    assert scaler.scale == 1.0


def test_scaled_backward_then_unscale_gives_the_plain_gradient():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    x = torch.randn(5)
    (w * x).sum().backward()
    plain = w.grad.clone()
    w.grad = None
    scaler = LossScaler(True, init_scale=2.0 ** 12)
    scaler.scaled((w * x).sum()).backward()
    assert torch.equal(w.grad, plain * 2.0 ** 12)
    scaler.unscale_([w])
    assert torch.equal(w.grad, plain)  # powers of two: exact


def test_fp16_gradients_underflow_without_the_scale():
    # Why fp16 needs scaling: a gradient of 1e-8 is below fp16's smallest subnormal (6e-8).
    w = torch.nn.Parameter(torch.ones(1, dtype=torch.float16))
    (w * 1e-8).sum().backward()
    assert w.grad.item() == 0.0
    w.grad = None
    scaler = LossScaler(True)
    scaler.scaled((w * 1e-8).sum()).backward()
    assert w.grad.item() != 0.0


def test_disabled_scaler_changes_nothing_and_state_round_trips():
    off = LossScaler(False, init_scale=2.0 ** 16)
    loss = torch.tensor(3.0)
    assert off.scaled(loss) is loss and off.scale == 1.0
    off.update(overflow=True)
    assert off.overflows == 0
    scaler = LossScaler(True, init_scale=64.0, growth_interval=5)
    scaler.update(overflow=True)
    scaler.update(overflow=False)
    again = LossScaler(True)
    again.load_state_dict(scaler.state_dict())
    assert again.state_dict() == scaler.state_dict() == \
        {"scale": 32.0, "good_steps": 1, "overflows": 1}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cpu_autocast_runs_the_model_in_half_precision(precision):
    from hvdlm.config import ModelConfig
    from hvdlm.models import build_model
    from hvdlm.training.scoring import window_loss
    model = build_model(ModelConfig(n_layer=1, n_head=2, n_embd=16, seq_len=8, vocab_size=40))
    window = torch.randint(0, 40, (2, 9))
    loss, logits, _ = window_loss(model, window, autocast_dtype(precision))
    assert logits.dtype == torch.float32 and torch.isfinite(loss)
    with torch.autocast("cpu", dtype=autocast_dtype(precision)):
        assert model(window[:, :-1]).dtype == autocast_dtype(precision)


def test_tf32_is_set_for_cuda_only():
    from hvdlm.training.precision import use_tf32
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        use_tf32(torch.device("cpu"), True)
        assert not torch.backends.cuda.matmul.allow_tf32
        use_tf32(torch.device("cuda", 0), True)  # only flags: no GPU needed to set them
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_train_compile_auto_is_on_for_cuda_only():
    from hvdlm.training.trainer import compiled
    model = torch.nn.Linear(2, 2)
    assert compiled(model, "auto", torch.device("cpu")) is model
    assert compiled(model, "false", torch.device("cuda", 0)) is model
    for setting, device in (("auto", torch.device("cuda", 0)), ("true", torch.device("cpu"))):
        wrapper = compiled(model, setting, device)  # compiles lazily, at the first call
        assert wrapper is not model and wrapper._orig_mod is model
