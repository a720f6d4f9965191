#!/usr/bin/env bash
# Install Debian's Chromium (the `chromium` package) if it is missing, for the test that renders
# `python -m hvdlm.explain`'s page in a real headless browser (tests/test_explain.py,
# test_page_renders_in_headless_chromium).
#
#   sudo scripts/install-chromium.sh        prints the browser's path on its last line
#
# As tests/infra/local-slurm.sh installs Slurm: apt-get install --no-install-recommends, and only
# when that fails an `apt-get update` and a second try; package scripts may start no daemon
# (a policy-rc.d of our own for the duration, removed again). Needs root to install; an
# installed browser is found without it. Exit 1 with the apt log's tail when apt fails (no
# mirror reachable, for one).
set -euo pipefail

PACKAGES=(chromium)
say() { echo "install-chromium: $*"; }
die() { echo "install-chromium: $*" >&2; exit 1; }

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || die "${missing[*]} not installed, and installing needs root"
  say "installing ${missing[*]}"
  policy=/usr/sbin/policy-rc.d own_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  log=$(mktemp "${TMPDIR:-/tmp}/install-chromium.XXXXXX")
  trap '((own_policy)) && rm -f "$policy"; rm -f "$log"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt=(apt-get -y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
       -o Dpkg::Options::=--force-confold)
  if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    apt-get -q -o DPkg::Lock::Timeout=300 update >>"$log" 2>&1 || true
    if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
      tail -n 20 "$log" >&2
      die "apt-get install ${missing[*]} failed"
    fi
  fi
  say "installed ${missing[*]}"
fi
command -v chromium || die "chromium is installed but not on PATH"
