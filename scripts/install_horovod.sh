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
# device thread spins until the next scheduler tick when a pair's lock is busy. And its Gloo
# HTTP rendezvous store sends no credential, so anyone who reaches the port can rewrite a job's
# rendezvous; patched, it sends the job's secret (HOROVOD_GLOO_RENDEZVOUS_SECRET) that
# hvdlm's rendezvous server checks. We patch all six (scripts/horovod-patches/, one file
# each, saying what it changes and why), build a
# wheel without build isolation against the torch already installed, and cache it outside the
# checkout, keyed by Horovod, torch, Python, build flags and the patches' contents, so later
# runs only install it.
# Needs: cmake, a C++ compiler, torch installed in $PYTHON's environment.
#
# Offline (air-gapped clusters): HOROVOD_SDIST=/path/to/horovod-0.28.1.tar.gz builds from that
# file instead of downloading it (get it elsewhere with `pip download --no-deps --no-binary
# :all: horovod==0.28.1`); the runtime dependencies at the end are installed only if missing.
set -euo pipefail

HOROVOD_VERSION=0.28.1
PATCHES=$(cd "$(dirname "$0")/horovod-patches" && pwd)
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
  # Link the shared NCCL that torch loads too (not a static one found elsewhere on the system).
  flags+=" HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_HOME=$nccl_home HOROVOD_NCCL_LINK=SHARED"
  # With CUDA 13 Horovod's default architecture list (parsed from nvcc --help) holds only the
  # newest one; build for the GPUs this machine sees unless told otherwise.
  cc_list=${HOROVOD_BUILD_CUDA_CC_LIST:-$("$PYTHON" -c 'import torch; print(",".join(sorted({
      "%d%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))')}
  [[ -n $cc_list ]] && flags+=" HOROVOD_BUILD_CUDA_CC_LIST=$cc_list"
  # The pip nccl package ships libnccl.so.2 only; Horovod's CMake looks for libnccl.so.
  [[ -e $nccl_home/lib/libnccl.so ]] || ln -sf libnccl.so.2 "$nccl_home/lib/libnccl.so"
fi

# CMake 4 refuses the bundled Gloo's minimum version (2.8.12) without this; 3.x ignores it.
flags+=" CMAKE_POLICY_VERSION_MINIMUM=3.5"
# GCC >= 13 no longer includes these headers transitively, and Horovod 0.28.1's sources rely
# on it (group_table.h uses std::string, common.h std::logic_error, ...).
export CXXFLAGS="${CXXFLAGS:-} -include cstdint -include string -include stdexcept -include limits"

torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)')
py_tag=$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
build_key=$(cat <(echo "$flags $CXXFLAGS") "$PATCHES"/*.patch | sha256sum | cut -c1-12)
key="horovod-${HOROVOD_VERSION}-torch${torch_version}-${py_tag}-${build_key}"
wheel_dir="$CACHE/$key"

if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
  echo "install_horovod: building $key (about 3 minutes on 2 cores); flags: $flags"
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

  for p in "$PATCHES"/*.patch; do
    patch -d "$src" -p1 --forward --quiet < "$p" || die "$(basename "$p") did not apply"
  done

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
# What was built, for RUN/env.json (hvdlm/training/record/provenance.py): the key names the Horovod
# and torch versions, the Python and the hash of the build flags and patches.
"$PYTHON" - "$key" <<'PY'
import importlib.util, pathlib, sys
origin = pathlib.Path(importlib.util.find_spec("horovod").origin)
origin.with_name("hvdlm_build.txt").write_text(sys.argv[1] + "\n")
PY
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
