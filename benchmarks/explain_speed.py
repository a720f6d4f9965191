"""How long `python -m hvdlm.explain` takes on a 1,000-token text with a GPT-124M-shaped model.

    python -m benchmarks.explain_speed [--tokens 1000] [--device cpu] [--integrated-gradients]
        [--threads N] [--out DIR]

The model is GPT-2 small's shape (12 layers, 12 heads, 768 wide, 1,024 positions, vocabulary
50,257; random weights: the work does not depend on them); the text is the first --tokens bytes
of a standard-library module, read with the byte tokenizer. Timed: the report itself
(hvdlm.explain.report.Explainer.text: scoring, explicit attention, logit lens over the full
vocabulary at every layer, gradient x input, recurrent states where they apply), then the page
and the JSON, as the command makes them; not timed: building the model (the command loads a
checkpoint instead). Goal: within a minute on CPU. Prints one line per phase and the total
(wall and CPU time: on a shared machine the CPU time over the threads is the better guide);
with --out also writes DIR/index.html and DIR/explain.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import time
from pathlib import Path
from typing import Sequence

import torch

from hvdlm.config import ModelConfig
from hvdlm.explain import page
from hvdlm.explain.report import Explainer, Options
from hvdlm.models import build_model, count_parameters
from hvdlm.text.tokenizer import Tokenizer, build_byte_tokenizer, hf_to_json_bytes

GPT2_SMALL = dict(arch="gpt", n_layer=12, n_head=12, n_embd=768, seq_len=1024, vocab_size=50257)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.explain_speed",
                                description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--integrated-gradients", action="store_true")
    p.add_argument("--steps", type=int, default=64, help="integrated-gradient steps")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", help="also write the page and the JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(ModelConfig(**GPT2_SMALL)).eval().requires_grad_(False).to(args.device)
    tokenizer = Tokenizer(hf_to_json_bytes(build_byte_tokenizer()))
    source = Path(sysconfig.get_paths()["stdlib"]) / "argparse.py"
    ids = tokenizer.encode(source.read_text(encoding="utf-8"))[:args.tokens]
    options = Options(integrated_gradients=args.integrated_gradients, ig_steps=args.steps)
    explainer = Explainer(model, GPT2_SMALL["seq_len"], GPT2_SMALL["vocab_size"], tokenizer,
                          torch.device(args.device), options)
    print(f"explain_speed: {len(ids)} tokens, GPT {count_parameters(model) / 1e6:.1f}M "
          f"parameters (12 x 768, vocabulary 50,257), {args.device}, "
          f"{torch.get_num_threads()} threads", flush=True)
    started, cpu = time.perf_counter(), time.process_time()
    text = explainer.text(ids, source.name)
    report_s = time.perf_counter() - started
    report = {"format": "hvdlm-explain", "version": 1, "device": args.device, "notes": [],
              "run": {"path": "(benchmark)", "checkpoint": "(random weights)", "step": 0,
                      "world_size": 1},
              "model": GPT2_SMALL, "texts": [text], "seconds": round(report_s, 3),
              "token_text": {str(i): t for i, t in sorted(explainer.token_text.items())}}
    mark = time.perf_counter()
    html = page.render(report)
    encoded = json.dumps(report, allow_nan=False)
    write_s = time.perf_counter() - mark
    total = time.perf_counter() - started
    print(f"  report {report_s:.1f} s, page + JSON {write_s:.1f} s "
          f"({len(html) / 1e6:.1f} MB + {len(encoded) / 1e6:.1f} MB)")
    print(f"  total {total:.1f} s, {time.process_time() - cpu:.1f} s of CPU time "
          f"(goal: within 60 s on CPU)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "index.html").write_text(html, encoding="utf-8")
        (out / "explain.json").write_text(encoded + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
