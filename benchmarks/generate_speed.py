"""Generation speed with the models' own decoders (GPT's key/value cache, the RNN's carried
state, the CNN's past columns) against recomputing the window for every token, side by side.

    python -m benchmarks.generate_speed [--arch gpt,lstm,cnn] [--prompt-tokens 128]
        [--new-tokens 64] [--device cpu] [--threads N]

Each model has GPT-2 small's width and vocabulary (768 wide, 50,257 tokens, 1,024 positions;
GPT 12 layers and 12 heads, LSTM 2 layers, CNN 8 blocks) with random weights: the work does not
depend on them. Both ways decode greedily from the same prompt and must produce the same tokens
(checked); prints tokens per second of each and their ratio.
"""
from __future__ import annotations

import argparse
import time
from typing import Sequence

import torch

from hvdlm.config import ModelConfig
from hvdlm.models import build_model, count_parameters
from hvdlm.models.decoding import DecodeOptions, WindowDecoder, continue_text, decoder_for

SHAPES = {"gpt": dict(n_layer=12, n_head=12), "lstm": dict(n_layer=2),
          "gru": dict(n_layer=2), "cnn": dict(n_layer=8, kernel_size=4, dilation_growth=2)}


def timed(model: torch.nn.Module, prompt: list[int], new: int, seq_len: int, cached: bool):
    options = DecodeOptions(max_new_tokens=new, temperature=0)
    started = time.perf_counter()
    with torch.no_grad():
        out = continue_text(model, prompt, options, seq_len=seq_len, eos_id=None, cached=cached)
    return out.tokens, time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.generate_speed",
                                description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="gpt,lstm,cnn")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seq_len = 1024
    print(f"generate_speed: {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, "
          f"greedy, {args.device}, {torch.get_num_threads()} threads", flush=True)
    print("| model | parameters | own decoder (tokens/s) | recompute the window (tokens/s) "
          "| ratio |\n|---|---|---|---|---|")
    prompt = torch.randint(0, 50257, (args.prompt_tokens,),
                           generator=torch.Generator().manual_seed(0)).tolist()
    for arch in args.arch.split(","):
        torch.manual_seed(0)
        cfg = ModelConfig(arch=arch, n_embd=768, seq_len=seq_len, vocab_size=50257,
                          **SHAPES[arch])
        model = build_model(cfg).eval().to(args.device)
        assert not isinstance(decoder_for(model, seq_len), WindowDecoder), arch
        own, own_s = timed(model, prompt, args.new_tokens, seq_len, cached=True)
        again, again_s = timed(model, prompt, args.new_tokens, seq_len, cached=False)
        same = "" if own == again else " (tokens differ!)"
        print(f"| {arch} | {count_parameters(model) / 1e6:.1f}M | {len(own) / own_s:.1f} "
              f"| {len(again) / again_s:.1f} | {again_s / own_s:.1f}x{same} |", flush=True)
        if own != again:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
