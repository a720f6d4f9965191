#!/usr/bin/env bash
# GPU readiness check, for a machine with an NVIDIA GPU (run from the repository root):
#   bash benchmarks/gpu_check.sh [--peak-flops F] [OUT]
# 1. builds Horovod with NCCL against the installed CUDA torch (scripts/install_horovod.sh
#    turns NCCL on when CUDA torch, nvcc and NCCL headers are found; set HOROVOD_NCCL_HOME to
#    point at an NCCL install, e.g. the nvidia-nccl-cu* package's folder),
# 2. preprocesses part of the Python standard library (BPE, 8k vocabulary),
# 3. trains a GPT-124M-shaped model (12 layers, 12 heads, 768 wide, 1024 tokens) in bf16 for
#    a short run with one rank per GPU, and prints tokens/s and MFU (peak: train.peak_flops,
#    989e12 = H100/H200 dense bf16; another GPU's with --peak-flops).
# It writes OUT/summary.txt. Offline it needs HOROVOD_SDIST (see scripts/install_horovod.sh)
# and Horovod's runtime dependencies installed.
set -euo pipefail
PEAK_FLOPS=989e12
if [[ ${1:-} == --peak-flops ]]; then PEAK_FLOPS=$2; shift 2; fi
OUT=${1:-gpu-check-out}
PY=${PYTHON:-python3}
export PATH="$(dirname "$($PY -c 'import sys; print(sys.executable)')"):$PATH"  # horovodrun
NGPU=$($PY -c 'import torch; print(torch.cuda.device_count())')
[[ $NGPU -ge 1 ]] || { echo "gpu_check: no CUDA device visible to torch" >&2; exit 1; }
PYTHON=$PY scripts/install_horovod.sh
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # hvdlm from this checkout; no install, no index
mkdir -p "$OUT"
horovodrun --check-build | tee "$OUT/summary.txt"
grep -q '\[X\] NCCL' "$OUT/summary.txt" || echo "gpu_check: warning: Horovod built without NCCL"

STDLIB=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
$PY -m hvdlm.preprocess "$STDLIB/json" "$STDLIB/email" "$STDLIB/asyncio" "$STDLIB/unittest" \
  --out "$OUT/data" --vocab-size 8192 --val-fraction 0.05 --overwrite
horovodrun --gloo -np "$NGPU" -H "localhost:$NGPU" \
  $PY -m hvdlm.train --data "$OUT/data" --out "$OUT/run" --resume never \
  model.n_layer=12 model.n_head=12 model.n_embd=768 model.seq_len=1024 \
  train.micro_batch=16 train.max_steps=60 train.warmup_steps=10 train.log_interval=10 \
  train.eval_interval=1000 train.ckpt_interval=1000 train.precision=bf16 train.device=cuda \
  train.peak_flops="$PEAK_FLOPS"
$PY - "$OUT/run/metrics.jsonl" <<'PY' | tee -a "$OUT/summary.txt"
import json, statistics, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if "tokens_per_s" in r][1:]  # skip warm-up
print(f"gpu_check: {statistics.median(r['tokens_per_s'] for r in rows):,.0f} tokens/s, "
      f"MFU {statistics.median(r['mfu'] for r in rows):.1%} (median of {len(rows)} log intervals)")
PY
