#!/usr/bin/env bash
# Build (once) and install Horovod 0.28.1 into the current Python environment.
#
#   PYTHON=.venv/bin/python scripts/install_horovod.sh
#
# Horovod's last release compiles its torch extension as C++14, and torch >= 2.1 needs C++17;
# its process-set Gloo contexts also ignore HOROVOD_GLOO_IFACE and bind to the address the
# hostname resolves to, which breaks multi-host runs where that is 127.0.0.1. On CPU, where a
# rank's threads share its cores, three more things cost time: the torch binding waits for a
# collective by spinning, taking the core from the background thread doing the work; the
# background thread wakes every cycle whether or not there is work; and the bundled Gloo's
# device thread spins until the next scheduler tick when a pair's lock is busy. We patch all
# five (the last three from scripts/horovod-patches/), build a wheel without build isolation
# against the torch already installed, and cache it outside the checkout, keyed by Horovod,
# torch, Python and build flags, so later runs only install it.
# Needs: cmake, a C++ compiler, torch installed in $PYTHON's environment.
#
# Offline (air-gapped clusters): HOROVOD_SDIST=/path/to/horovod-0.28.1.tar.gz builds from that
# file instead of downloading it (get it elsewhere with `pip download --no-deps --no-binary
# :all: horovod==0.28.1`); the runtime dependencies at the end are installed only if missing.
set -euo pipefail

HOROVOD_VERSION=0.28.1
PATCH_LEVEL=p4   # bump when the patches below change, so old cached wheels are not reused
PYTHON=${PYTHON:-python3}
CACHE=${HVDLM_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hvdlm/wheels}

die() { echo "install_horovod: $*" >&2; exit 1; }

command -v cmake >/dev/null || die "cmake not found: install it (apt-get install cmake, or pip install 'cmake<4')"
command -v patch >/dev/null || die "patch not found: install it (apt-get install patch)"
command -v "${CXX:-c++}" >/dev/null || die "no C++ compiler found: install one (apt-get install g++)"
"$PYTHON" -c 'import torch' 2>/dev/null || die "torch is not importable by $PYTHON: install torch first"

# Optional parts, detected rather than requested.
flags="HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1"
if command -v mpicxx >/dev/null; then
  flags+=" HOROVOD_WITH_MPI=1"
else
  flags+=" HOROVOD_WITHOUT_MPI=1"
fi
cuda_ok=$("$PYTHON" -c 'import torch; print(int(torch.version.cuda is not None))')
nccl_home=${HOROVOD_NCCL_HOME:-}
if [[ -z $nccl_home ]]; then
  nccl_home=$("$PYTHON" - <<'PY' 2>/dev/null || true
# nvidia-nccl-cu12/-cu13 install nvidia/nccl/{include,lib}; look in nvidia/cu*/ too.
import os, nvidia
for root in nvidia.__path__:
    for sub in ["nccl"] + sorted(d for d in os.listdir(root) if d.startswith("cu")):
        if os.path.exists(os.path.join(root, sub, "include", "nccl.h")):
            print(os.path.join(root, sub)); raise SystemExit
PY
)
fi
if [[ $cuda_ok == 1 && -n $nccl_home && -e $nccl_home/include/nccl.h ]] && command -v nvcc >/dev/null; then
  flags+=" HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_HOME=$nccl_home"
  # The pip nccl package ships libnccl.so.2 only; Horovod's CMake looks for libnccl.so.
  [[ -e $nccl_home/lib/libnccl.so ]] || ln -sf libnccl.so.2 "$nccl_home/lib/libnccl.so"
fi

torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)')
py_tag=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
flags_key=$(echo "$flags" | sha256sum | cut -c1-12)
key="horovod-${HOROVOD_VERSION}${PATCH_LEVEL}-torch${torch_version}-${py_tag}-${flags_key}"
wheel_dir="$CACHE/$key"

if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
  echo "install_horovod: building $key (about 7 minutes on 2 cores); flags: $flags"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  sdist=${HOROVOD_SDIST:-}
  if [[ -z $sdist ]]; then
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$work"
    sdist="$work/horovod-$HOROVOD_VERSION.tar.gz"
  fi
  [[ -f $sdist ]] || die "HOROVOD_SDIST=$sdist: no such file"
  tar -xzf "$sdist" -C "$work"
  [[ -d $work/horovod-$HOROVOD_VERSION ]] || die "$sdist does not hold horovod-$HOROVOD_VERSION/"
  src="$work/horovod-$HOROVOD_VERSION"

  # Patch 1: C++17, which torch >= 2.1 requires.
  sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' \
    "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
  # Patch 2: process-set Gloo contexts use the interface of the global context
  # (upstream reads gloo_iface_ before ever setting it in InitializeForProcessSet).
  sed -i '/void GlooContext::InitializeForProcessSet/,/CreateDevice/ s/^  device_attr.iface = gloo_iface_;/  gloo_iface_ = global_context.gloo_iface_;\n  device_attr.iface = gloo_iface_;/' \
    "$src/horovod/common/gloo/gloo_context.cc"
  grep -q 'gloo_iface_ = global_context.gloo_iface_;' "$src/horovod/common/gloo/gloo_context.cc" \
    || die "the Gloo interface patch did not apply"
  # Patches 3 and on, from scripts/horovod-patches/ (each file says what it changes):
  # synchronize() blocks instead of spinning; HOROVOD_WAKE_ON_ENQUEUE starts a cycle on enqueue;
  # Gloo's device thread yields the core when a pair is busy.
  for p in "$(dirname "$0")"/horovod-patches/*.patch; do
    patch -d "$src" -p1 --forward --quiet < "$p" || die "$(basename "$p") did not apply"
  done
  if grep -q 'CMAKE_CXX_STANDARD 14' "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"; then
    die "the C++17 patch did not apply"
  fi

  mkdir -p "$work/out"
  # shellcheck disable=SC2086
  env $flags MAKEFLAGS="-j$(nproc)" "$PYTHON" -m pip wheel --no-build-isolation --no-deps \
    -w "$work/out" "$src"
  mkdir -p "$wheel_dir"
  mv "$work"/out/horovod-*.whl "$wheel_dir/"
else
  echo "install_horovod: reusing cached wheel in $wheel_dir"
fi

"$PYTHON" -m pip install --quiet --no-deps --force-reinstall "$wheel_dir"/horovod-*.whl
# Horovod's own runtime dependencies (the wheel was installed without them): only those not
# already installed at a suitable version, so that a machine without a package index works.
missing=$("$PYTHON" - "cffi>=1.4" "cloudpickle>=2,<4" "psutil>=5,<8" "pyyaml>=6,<7" "packaging>=21" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
for spec in sys.argv[1:]:
    req = Requirement(spec)
    try:
        ok = req.specifier.contains(version(req.name), prereleases=True)
    except PackageNotFoundError:
        ok = False
    if not ok:
        print(spec)
PY
)
if [[ -n $missing ]]; then
  # shellcheck disable=SC2086  # one requirement a line, none with spaces or glob characters
  "$PYTHON" -m pip install --quiet $missing
fi

bindir=$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')")
check=$("$bindir/horovodrun" --check-build)
echo "$check" | grep -q '\[X\] PyTorch' || die "built Horovod lacks PyTorch support:\n$check"
echo "$check" | grep -q '\[X\] Gloo' || die "built Horovod lacks Gloo support:\n$check"
echo "install_horovod: Horovod $HOROVOD_VERSION installed (PyTorch, Gloo) from $wheel_dir"
