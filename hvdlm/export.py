"""Export a run's GPT as a Hugging Face GPT-2 model folder, or its Llama as a LlamaForCausalLM
one, tokenizer included.

    python -m hvdlm.export --run RUN --out DIR [--checkpoint PATH] [--dtype fp32|bf16]

DIR holds config.json, generation_config.json, model.safetensors, tokenizer.json,
tokenizer_config.json and special_tokens_map.json, and loads with transformers'
`AutoModelForCausalLM.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)` (no
network). DIR appears only when complete; an existing DIR is refused unless --overwrite and
it is a model folder (has model.safetensors), as preprocess's --overwrite, and is replaced only
once the new one is whole. `model.arch=gpt` maps onto GPT-2 (models/gpt2_format.py),
`model.arch=llama` onto LlamaForCausalLM (models/llama_format.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from hvdlm import cli, output
from hvdlm.errors import UsageError
from hvdlm.models import gpt2_format, llama_format, safetensors
from hvdlm.training.run import Run

PROG = "hvdlm.export"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FORMATS = {"gpt": gpt2_format.to_gpt2, "llama": llama_format.to_hf}  # arch -> its writer


def _json(value: dict) -> bytes:
    return (json.dumps(value, indent=1) + "\n").encode()


def export(run: Path, out: Path, checkpoint_path: str | None = None, dtype: str = "fp32",
           tokenizer_path: str | None = None, overwrite: bool = False) -> None:
    """Write the Hugging Face folder `out` for the run's (or the given) checkpoint; with
    `overwrite`, an earlier export there is replaced once the new one is complete."""
    replace = output.Overwrite(overwrite, "model.safetensors", "a model folder")
    opened = Run.open(run, checkpoint_path, tokenizer=tokenizer_path)
    cfg, tokenizer = opened.config.model, opened.tokenizer
    if cfg.arch not in FORMATS:
        raise UsageError(f"{run}: model.arch={cfg.arch} cannot be exported; Hugging Face export "
                         "supports model.arch=gpt (as GPT-2) and llama (as LlamaForCausalLM)")
    output.refuse_existing(out, replace)
    config, tensors = FORMATS[cfg.arch](cfg, opened.state.model, tokenizer.eos_id,
                                        DTYPES[dtype])
    files = {"config.json": _json(config),
             "generation_config.json": _json({"bos_token_id": tokenizer.eos_id,
                                              "eos_token_id": tokenizer.eos_id,
                                              "pad_token_id": tokenizer.eos_id}),
             "tokenizer.json": Path(tokenizer.source).read_bytes(),
             **tokenizer.transformers_files(cfg.seq_len)}
    with output.staged(out, replace) as stage:
        safetensors.save(stage / "model.safetensors", tensors, {"format": "pt"})
        for name, data in files.items():
            (stage / name).write_bytes(data)


def _main(argv: Sequence[str] | None) -> int:
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run folder with checkpoints/")
    parser.add_argument("--out", required=True, metavar="DIR", help="model folder to create")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="export this checkpoint file (default: the run's newest)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="weights' type in model.safetensors (default fp32)")
    parser.add_argument("--tokenizer", metavar="FILE",
                        help="tokenizer.json (default: the run's dataset's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing DIR (only a model folder: model.safetensors), "
                             "once the new one is complete")
    args = parser.parse_args(argv)
    export(Path(args.run), Path(args.out), args.checkpoint, args.dtype, args.tokenizer,
           args.overwrite)
    print(f"{PROG}: wrote {args.out}")
    return 0


main = cli.entry_point(_main, PROG)

if __name__ == "__main__":
    sys.exit(main())
