#!/usr/bin/env bash
# The GPU check: one command for a fresh single-GPU Linux machine with CUDA PyTorch, nvcc and
# cmake but no internet (run from the repository root):
#
#   bash benchmarks/gpu_check.sh [--packages DIR] [--peak-flops F] [OUT]
#   bash benchmarks/gpu_check.sh --cpu-smoke [OUT]          (the same check on the CPU, tiny)
#   bash benchmarks/gpu_check.sh --fetch DIR [--python-version 3.12]   (where there is internet)
#
# 1. Installs Horovod 0.28.1 with NCCL from DIR (default: gpu-check-packages/ in the
#    repository root): a wheel horovod-0.28.1-*.whl built before is installed as it is; else
#    the source archive horovod-0.28.1.tar.gz is built by scripts/install_horovod.sh with its
#    patches (HOROVOD_GPU_OPERATIONS=NCCL, HOROVOD_NCCL_HOME = the nvidia-nccl-cu* package's
#    folder, which that script finds; a HOROVOD_NCCL_HOME you set wins). Python packages
#    Horovod or hvdlm need and this machine lacks (tomli-w, cloudpickle, psutil, cffi, ...)
#    are installed from DIR too, never from an index.
# 2. Runs python -m benchmarks.gpu_check (its docstring says what it measures): the GPT-124M
#    shape in bf16 eager and compiled (tokens/s, MFU against --peak-flops, default 989e12 =
#    H100/H200 dense bf16; peak memory), fp16 with loss scaling for 50 steps, a Horovod world
#    on the GPU, hvdlm.evaluate and hvdlm.generate on CUDA, the NCCL allreduce benchmark.
# It writes OUT/summary.txt and OUT/summary.json (default OUT: gpu-check-out) and exits 0 only
# when every stage passed. Budget: 10 minutes on a 16-core machine, the build included (the
# measurements start no stage after 9 minutes from the start).
#
# Filling DIR on a machine with internet (the same CPU architecture and Python version):
#   bash benchmarks/gpu_check.sh --fetch gpu-check-packages
# which runs `pip download --no-deps --no-binary :all: horovod==0.28.1` and downloads wheels
# of the small dependencies for that Python; carry DIR to the GPU machine with the checkout.
#
# --cpu-smoke: every stage on the CPU at a tiny shape, with the Horovod already installed (no
# build); tests/test_gpu_check.py runs it, so the script cannot rot where no GPU is.
# PYTHON: the interpreter (default python3); HOROVOD_NCCL_HOME: see step 1.
set -euo pipefail

die() { echo "gpu_check: error: $*" >&2; exit 2; }

PY=${PYTHON:-python3}
PACKAGES=gpu-check-packages
PEAK_FLOPS=989e12
SMOKE=0
FETCH=""
PYVER=3.12
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --packages|--peak-flops|--fetch|--python-version)
      [[ $# -ge 2 ]] || die "$1 needs a value"
      case "$1" in
        --packages) PACKAGES=$2 ;; --peak-flops) PEAK_FLOPS=$2 ;;
        --fetch) FETCH=$2 ;; --python-version) PYVER=$2 ;;
      esac
      shift 2 ;;
    --cpu-smoke) SMOKE=1; shift ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) OUT=$1; shift ;;
  esac
done
OUT=${OUT:-gpu-check-out}
# Horovod's runtime dependencies and hvdlm's that a bare CUDA image may lack (import names).
DEPS="tomli_w:tomli-w tqdm:tqdm cloudpickle:cloudpickle psutil:psutil cffi:cffi
      pycparser:pycparser yaml:pyyaml packaging:packaging"

if [[ -n $FETCH ]]; then
  mkdir -p "$FETCH"
  "$PY" -m pip download --no-deps --no-binary :all: horovod==0.28.1 -d "$FETCH"
  for dep in $DEPS; do
    "$PY" -m pip download --no-deps --only-binary :all: --python-version "$PYVER" \
      --platform manylinux2014_$(uname -m) --platform "manylinux_2_17_$(uname -m)" \
      "${dep#*:}" -d "$FETCH"
  done
  echo "gpu_check: $FETCH is ready; carry it to the GPU machine"
  exit 0
fi

START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # hvdlm and benchmarks from this checkout
mkdir -p "$OUT"
BUILD_JSON="$OUT/build.json"

if [[ $SMOKE == 1 ]]; then
  "$PY" -c 'import horovod.torch' 2>/dev/null \
    || die "--cpu-smoke uses the installed Horovod, and $PY has none (make setup)"
  echo '{"skipped": "--cpu-smoke uses the installed Horovod"}' > "$BUILD_JSON"
  exec "$PY" -m benchmarks.gpu_check --cpu-smoke --out "$OUT" --budget-s 300 --build "$BUILD_JSON"
fi

"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || die "no CUDA device visible to torch ($PY); --cpu-smoke runs the check on the CPU"
missing=""
for dep in $DEPS; do
  "$PY" -c "import ${dep%%:*}" 2>/dev/null || missing+=" ${dep#*:}"
done
if [[ -n $missing ]]; then
  [[ -d $PACKAGES ]] || die "missing Python packages:$missing; put their wheels in $PACKAGES (see --fetch)"
  PACKAGES=$(cd "$PACKAGES" && pwd)
  # shellcheck disable=SC2086
  "$PY" -m pip install --quiet --no-index --find-links "$PACKAGES" $missing
fi

[[ -d $PACKAGES ]] && PACKAGES=$(cd "$PACKAGES" && pwd)
nccl_horovod() { "$PY" -c 'import horovod.torch as h, sys; sys.exit(0 if h.nccl_built() else 1)' 2>/dev/null; }
wheel=$(ls "$PACKAGES"/horovod-0.28.1-*.whl 2>/dev/null | head -n1 || true)
sdist=$PACKAGES/horovod-0.28.1.tar.gz
if nccl_horovod; then
  how="already installed with NCCL"
elif [[ -n $wheel ]]; then
  "$PY" -m pip install --quiet --no-deps --no-index --force-reinstall "$wheel"
  how="installed from $wheel"
elif [[ -f $sdist ]]; then
  # The pip of install_horovod.sh looks in DIR, not an index, for anything else it installs.
  PIP_NO_INDEX=1 PIP_FIND_LINKS=$PACKAGES HOROVOD_SDIST=$sdist PYTHON=$PY \
    scripts/install_horovod.sh
  how="built from $sdist"
else
  die "no Horovod 0.28.1 in $PACKAGES: put horovod-0.28.1.tar.gz there (pip download --no-deps --no-binary :all: horovod==0.28.1 -d $PACKAGES) or a wheel built before"
fi
nccl=false; nccl_horovod && nccl=true
BUILT=$(( $(date +%s) - START ))
printf '{"how": "%s", "nccl": %s, "seconds": %d}\n' "$how" "$nccl" "$BUILT" > "$BUILD_JSON"
echo "gpu_check: Horovod $how in ${BUILT}s; NCCL: $nccl"
[[ $nccl == true ]] || echo "gpu_check: warning: Horovod has no NCCL; the check goes on and will say so" >&2
exec "$PY" -m benchmarks.gpu_check --out "$OUT" --peak-flops "$PEAK_FLOPS" \
  --budget-s $(( 540 - BUILT > 60 ? 540 - BUILT : 60 )) --build "$BUILD_JSON"
