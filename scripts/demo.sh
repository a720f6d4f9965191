#!/usr/bin/env bash
# The end-to-end demo (`make demo`): the Python standard library in, a trained GPT out.
#   1. preprocess the running Python's stdlib: byte-level BPE (8k), HDF5 shards
#   2. train a small GPT with `horovodrun -np 2` (Gloo, CPU) for a few minutes
#   3. evaluate it next to a unigram baseline on the same validation windows
#   4. generate a sample
# Settings: DEMO_OUT (default demo-out), DEMO_STEPS (default 400), DEMO_NP (default 2).
set -euo pipefail
OUT=${DEMO_OUT:-demo-out}
STEPS=${DEMO_STEPS:-400}
NP=${DEMO_NP:-2}
PY=${PYTHON:-python}
# The stdlib folder also holds site-packages (whatever happens to be installed): leave it out.
mapfile -t INPUTS < <($PY -c '
import pathlib, sysconfig
root = pathlib.Path(sysconfig.get_paths()["stdlib"])
skip = {"site-packages", "dist-packages", "__pycache__"}
print("\n".join(str(p) for p in sorted(root.iterdir()) if p.name not in skip))')
STDLIB=$(dirname "${INPUTS[0]}")
start=$(date +%s)
stamp() { echo "[demo $(( $(date +%s) - start ))s] $*"; }

stamp "1/4 preprocessing $STDLIB -> $OUT/data"
$PY -m hvdlm.preprocess "${INPUTS[@]}" --out "$OUT/data" --tokenizer bpe --vocab-size 8192 \
  --val-fraction 0.01 --workers 2 --seed 0 --overwrite

stamp "2/4 training a GPT with horovodrun -np $NP ($STEPS steps) -> $OUT/run"
horovodrun -np "$NP" -H "localhost:$NP" --gloo \
  $PY -m hvdlm.train --data "$OUT/data" --out "$OUT/run" --resume never \
  model.arch=gpt model.n_layer=4 model.n_head=4 model.n_embd=128 model.seq_len=128 \
  train.micro_batch=16 train.max_steps="$STEPS" train.lr=2e-3 train.min_lr=2e-4 \
  train.warmup_steps=40 train.eval_interval=200 train.eval_batches=8 train.ckpt_interval=200 \
  train.log_interval=20 || true
[[ -e $OUT/run/checkpoints/latest ]] || { echo "demo: training failed, see $OUT/run/log.txt" >&2; exit 1; }

stamp "3/4 evaluating on the validation split"
model=$($PY -m hvdlm.evaluate --run "$OUT/run" --data "$OUT/data" --json)
unigram=$($PY -m hvdlm.evaluate --baseline unigram --data "$OUT/data" --seq-len 128 --json)
$PY - "$model" "$unigram" "$OUT/run/metrics.jsonl" <<'PY'
import json, statistics, sys
model, unigram = json.loads(sys.argv[1]), json.loads(sys.argv[2])
speeds = [r["tokens_per_s"] for r in map(json.loads, open(sys.argv[3])) if "tokens_per_s" in r]
print(f"  GPT     val perplexity {model['perplexity']:8.2f}   bits/byte {model['bits_per_byte']:.3f}"
      f"   accuracy {model['accuracy']:.3f}   ({model['tokens']:,} tokens)")
print(f"  unigram val perplexity {unigram['perplexity']:8.2f}   bits/byte {unigram['bits_per_byte']:.3f}"
      f"   accuracy {unigram['accuracy']:.3f}")
print(f"  training throughput: median {statistics.median(speeds):,.0f} tokens/s (all ranks)")
PY

stamp "4/4 sampling from the model"
$PY -m hvdlm.generate --run "$OUT/run" --prompt "def read_config(path):" --max-new-tokens 120 \
  --temperature 0.8 --top-k 40 --seed 0
echo
stamp "done. Dataset: $OUT/data (manifest.json, preprocess_report.json); run: $OUT/run"
echo "  (config.toml, metrics.jsonl, log.txt, checkpoints/, TensorBoard: tensorboard --logdir $OUT/run/tb)"
