"""Inside the recurrent models: hidden states and gates, recomputed from the weights.

torch's LSTM/GRU/RNN kernels return only the last layer's outputs and the final states, never
the gates, so `recompute` steps every layer through time from its own weights (PyTorch's gate
order and equations, as in the nn.LSTM / nn.GRU documentation):
  LSTM  i, f, g, o = σ, σ, tanh, σ of (W_ih x + b_ih + W_hh h + b_hh);  c' = f c + i g;
        h' = o tanh(c')
  GRU   r, z = σ(W_ir x + b_ir + W_hr h + b_hr), σ(...);  n = tanh(W_in x + b_in + r (W_hn h
        + b_hn));  h' = (1 - z) n + z h
  RNN   h' = tanh or relu of (W_ih x + b_ih + W_hh h + b_hh)
and checks the result against torch's own outputs and final states.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from hvdlm.models.rnn import RNNLM

GATES = {nn.LSTM: ("input", "forget", "cell", "output"), nn.GRU: ("reset", "update", "new"),
         nn.RNN: ()}
SATURATED = 0.95  # |tanh| above this, or a sigmoid below 1 - this or above it


@dataclass
class Layer:
    hidden: torch.Tensor                          # (T, H) h_t
    cell: torch.Tensor | None = None              # (T, H) c_t, LSTM only
    gates: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (T, H) activations


def _weights(rnn: nn.RNNBase, layer: int) -> tuple[torch.Tensor, ...]:
    w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
    zeros = torch.zeros(w_ih.shape[0], dtype=w_ih.dtype, device=w_ih.device)
    b_ih = getattr(rnn, f"bias_ih_l{layer}", None) if rnn.bias else None
    b_hh = getattr(rnn, f"bias_hh_l{layer}", None) if rnn.bias else None
    return w_ih, w_hh, zeros if b_ih is None else b_ih, zeros if b_hh is None else b_hh


def _step_layer(rnn: nn.RNNBase, layer: int, x: torch.Tensor) -> Layer:
    """One layer over x (T, input size), from a zero state."""
    w_ih, w_hh, b_ih, b_hh = _weights(rnn, layer)
    H = rnn.hidden_size
    from_input = x @ w_ih.T + b_ih                                   # (T, gates * H)
    h = torch.zeros(H, dtype=x.dtype, device=x.device)
    c = torch.zeros_like(h)
    names = GATES[type(rnn)]
    hs, cs, gates = [], [], {n: [] for n in names}
    for t in range(x.shape[0]):
        from_hidden = w_hh @ h + b_hh
        if isinstance(rnn, nn.LSTM):
            i, f, g, o = (from_input[t] + from_hidden).chunk(4)
            i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
            c = f * c + i * g
            h = o * c.tanh()
            cs.append(c)
            step = (i, f, g, o)
        elif isinstance(rnn, nn.GRU):
            xr, xz, xn = from_input[t].chunk(3)
            hr, hz, hn = from_hidden.chunk(3)
            r, z = (xr + hr).sigmoid(), (xz + hz).sigmoid()
            n = (xn + r * hn).tanh()
            h = (1 - z) * n + z * h
            step = (r, z, n)
        else:
            pre = from_input[t] + from_hidden
            h = pre.tanh() if rnn.nonlinearity == "tanh" else pre.relu()
            step = ()
        hs.append(h)
        for name, value in zip(names, step):
            gates[name].append(value)
    return Layer(torch.stack(hs), torch.stack(cs) if cs else None,
                 {n: torch.stack(v) for n, v in gates.items()})


@torch.no_grad()
def recompute(model: RNNLM, idx: torch.Tensor) -> tuple[list[Layer], float]:
    """Every layer's hidden states and gates over idx (1, T), and the largest difference from
    torch's own run of the same layers (last layer's outputs; every layer's final h and c)."""
    rnn = model.rnn
    x = model.drop(model.embed(idx))                                  # (1, T, C)
    layers, inputs = [], x[0]
    for layer in range(rnn.num_layers):
        layers.append(_step_layer(rnn, layer, inputs))
        inputs = layers[-1].hidden
    out, state = rnn(x)
    h_n, c_n = state if isinstance(state, tuple) else (state, None)
    error = (out[0] - layers[-1].hidden).abs().max().item()
    for k, layer in enumerate(layers):
        error = max(error, (h_n[k, 0] - layer.hidden[-1]).abs().max().item())
        if c_n is not None:
            error = max(error, (c_n[k, 0] - layer.cell[-1]).abs().max().item())
    return layers, error


def summaries(layers: list[Layer]) -> list[dict]:
    """Per layer, per time step: hidden-state norm (and cell-state norm), and for each gate its
    mean activation and the share of units saturated."""
    out = []
    for layer in layers:
        entry = {"hidden_norm": _rounded(layer.hidden.norm(dim=-1))}
        if layer.cell is not None:
            entry["cell_norm"] = _rounded(layer.cell.norm(dim=-1))
        entry["gates"] = {}
        for name, value in layer.gates.items():
            saturated = value.abs() > SATURATED if name in ("cell", "new") else \
                (value < 1 - SATURATED) | (value > SATURATED)
            entry["gates"][name] = {"mean": _rounded(value.mean(-1)),
                                    "saturated": _rounded(saturated.float().mean(-1))}
        out.append(entry)
    return out


def _rounded(t: torch.Tensor) -> list[float]:
    return [round(float(v), 6) for v in t]
