#!/usr/bin/env bash
# Test infrastructure (tests/multihost and benchmarks.emulated use it): not part of hvdlm itself.
# Emulate a small cluster on this machine: N hosts node01..nodeNN, each a network namespace with
# its own address in 10.77.0.0/24 and interface eth0, joined by a bridge that lives in a namespace
# of its own (hvdlm-sw), so nothing is added to the machine's own network. Each host's egress is
# shaped (tbf for rate; netem when a delay is asked for) and every host resolves every node name.
#
#   tests/infra/emulate-cluster.sh up 4 [--rate 1gbit] [--delay 0.2ms] [--loopback-hostname]
#   tests/infra/emulate-cluster.sh exec node02 python3 -c 'import socket; print(socket.gethostname())'
#   tests/infra/emulate-cluster.sh status
#   tests/infra/emulate-cluster.sh down
#
# --rate R      each host's egress rate, tc units (100mbit, 1gbit, 10gbit); 0 = unshaped.
# --delay D     one-way delay added to each host's egress (netem; needs sch_netem in the kernel).
# --loopback-hostname   map this machine's hostname to 127.0.0.1 inside the hosts, as many
#               distributions do; Horovod 0.28.1 without hvdlm's Gloo patch breaks there. By
#               default the hostname maps to each host's own address, which also avoids it.
#
# Needs root (namespaces need CAP_NET_ADMIN). `up` is idempotent: the same N re-applies rate,
# delay and names; another N rebuilds. `down` removes exactly what `up` recorded in
# $HVDLM_EMU_STATE (default /run/hvdlm-emulate-cluster). Ranks: python -m hvdlm.launch --netns.
set -euo pipefail

STATE_DIR=${HVDLM_EMU_STATE:-/run/hvdlm-emulate-cluster}
STATE=$STATE_DIR/state          # one "kind name" line per object we made, then config lines
SWITCH=hvdlm-sw
PREFIX=10.77.0                  # host i gets $PREFIX.i
PROG=emulate-cluster

die() { echo "$PROG: error: $*" >&2; exit 1; }
usage() { echo "usage: $PROG up N [--rate R] [--delay D] [--loopback-hostname] | down | status | exec HOST CMD..." >&2; exit 2; }

need_root() {
  [[ $EUID -eq 0 ]] || die "must run as root: network namespaces need CAP_NET_ADMIN (try: sudo $0 $*)"
}

need_tools() {
  command -v ip >/dev/null && command -v tc >/dev/null && return
  command -v apt-get >/dev/null || die "ip and tc (iproute2) are missing and apt-get is not available"
  echo "$PROG: installing iproute2" >&2
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 \
    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2; }; } \
    >/dev/null || die "could not install iproute2 with apt-get"
}

# Serialise up/down: the lock is this script file itself, so it leaves nothing behind.
lock() {
  exec 9<"${BASH_SOURCE[0]}"
  flock -w 60 9 || die "another $PROG up/down is still running after 60 s"
}

host_name() { printf 'node%02d' "$1"; }
recorded() { [[ -f $STATE ]] && grep -qxF "$1 $2" "$STATE"; }
record() { mkdir -p "$STATE_DIR"; recorded "$1" "$2" || echo "$1 $2" >>"$STATE"; }
config() { [[ -f $STATE ]] && sed -n "s/^config $1=//p" "$STATE" | tail -1; }
set_config() {
  if [[ -f $STATE ]]; then sed -i "/^config $1=/d" "$STATE"; fi
  echo "config $1=$2" >>"$STATE"
}
ns_exists() { [[ -e /run/netns/$1 ]]; }

# Create namespace $1 unless it exists; refuse one that exists but is not ours.
make_ns() {
  if ns_exists "$1"; then
    recorded netns "$1" || die "network namespace $1 exists but was not made by $PROG; remove it first (ip netns del $1)"
    return
  fi
  record netns "$1"   # recorded first, so a failure half-way is still cleaned up by down
  ip netns add "$1"
  ip -n "$1" link set lo up
}

# Bit/s of a tc rate such as 100mbit or 1.5gbit (bytes-per-second units are refused).
rate_bits() {
  local v=$1 num unit
  [[ $v =~ ^([0-9]+(\.[0-9]+)?)([kmgt]?bit)$ ]] || die "bad --rate $v: use a number with bit, kbit, mbit, gbit or tbit"
  num=${BASH_REMATCH[1]} unit=${BASH_REMATCH[3]}
  awk -v n="$num" -v u="$unit" 'BEGIN { m = (u=="kbit")?1e3:(u=="mbit")?1e6:(u=="gbit")?1e9:(u=="tbit")?1e12:1; printf "%.0f", n*m }'
}

# Egress shaping of host $1's eth0: tbf alone when there is no delay, netem (rate + delay) else.
shape() {
  local ns=$1 rate=$2 delay=$3 bits burst
  if [[ $delay != 0 ]]; then
    local args=(delay "$delay")
    [[ $rate != 0 ]] && args+=(rate "$rate")
    tc -n "$ns" qdisc replace dev eth0 root netem "${args[@]}"
  elif [[ $rate == 0 ]]; then
    tc -n "$ns" qdisc del dev eth0 root 2>/dev/null || true
  else
    bits=$(rate_bits "$rate")
    # One millisecond of traffic per token bucket (at least 64 KiB, one GSO segment), so the
    # link reaches its rate without bursting far above it.
    burst=$(( bits / 8 / 1000 )); (( burst < 65536 )) && burst=65536
    tc -n "$ns" qdisc replace dev eth0 root tbf rate "$rate" burst "$burst" latency 20ms
  fi
}

write_hosts() {
  local n=$1 loopback=$2 i name me self_addr
  me=$(hostname)
  for ((i = 1; i <= n; i++)); do
    name=$(host_name "$i")
    if [[ -d /etc/netns/$name ]] && ! recorded etcdir "/etc/netns/$name"; then
      die "/etc/netns/$name exists but was not made by $PROG; remove it first"
    fi
    [[ -d /etc/netns ]] || { record etcdir /etc/netns; mkdir -p /etc/netns; }
    record etcdir "/etc/netns/$name"
    mkdir -p "/etc/netns/$name"
    self_addr=$PREFIX.$i
    [[ $loopback == 1 ]] && self_addr=127.0.0.1
    {
      echo "# written by $PROG (ip netns exec mounts this over /etc/hosts)"
      echo "127.0.0.1 localhost"
      echo "$self_addr $me"
      for ((j = 1; j <= n; j++)); do echo "$PREFIX.$j $(host_name "$j")"; done
    } >"/etc/netns/$name/hosts"
  done
}

do_up() {
  local n=$1; shift
  local rate=1gbit delay=0 loopback=0
  while (($#)); do
    case $1 in
      --rate) rate=${2:?--rate needs a value}; shift 2 ;;
      --delay) delay=${2:?--delay needs a value}; shift 2 ;;
      --loopback-hostname) loopback=1; shift ;;
      *) usage ;;
    esac
  done
  [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 99)) || die "N must be 1..99 hosts, not $n"
  [[ $rate == 0 ]] || rate_bits "$rate" >/dev/null
  [[ $delay == 0 || $delay =~ ^[0-9]+(\.[0-9]+)?(us|ms|s)$ ]] || die "bad --delay $delay: use e.g. 0.2ms"
  local old; old=$(config hosts || true)
  if [[ -n $old && $old != "$n" ]]; then
    echo "$PROG: rebuilding: $old hosts up, $n asked" >&2
    do_down quiet
  fi
  make_ns "$SWITCH"
  # Probe netem before touching any host, so a kernel without it changes nothing.
  if [[ $delay != 0 ]]; then
    tc -n "$SWITCH" qdisc add dev lo root netem delay "$delay" 2>/dev/null \
      || die "cannot add a delay: this kernel has no netem qdisc (sch_netem); use --delay 0 (rate shaping uses tbf and works)"
    tc -n "$SWITCH" qdisc del dev lo root
  fi
  ip -n "$SWITCH" link show br0 >/dev/null 2>&1 || ip -n "$SWITCH" link add br0 type bridge
  ip -n "$SWITCH" link set br0 up
  local i name
  for ((i = 1; i <= n; i++)); do
    name=$(host_name "$i")
    make_ns "$name"
    if ! ip -n "$name" link show eth0 >/dev/null 2>&1; then
      ip -n "$SWITCH" link add "$name" type veth peer name eth0 netns "$name"
    fi
    ip -n "$SWITCH" link set "$name" master br0 up
    ip -n "$name" addr replace "$PREFIX.$i/24" dev eth0
    ip -n "$name" link set eth0 up
    shape "$name" "$rate" "$delay"
  done
  write_hosts "$n" "$loopback"
  set_config hosts "$n"; set_config rate "$rate"; set_config delay "$delay"
  set_config loopback_hostname "$loopback"
  echo "$PROG: $n hosts up ($(host_name 1)..$(host_name "$n"), $PREFIX.1-$n, rate $rate, delay $delay)"
}

do_down() {
  if [[ ! -f $STATE ]]; then
    [[ ${1:-} == quiet ]] || echo "$PROG: nothing to remove"
    return 0
  fi
  local kind name
  # Namespaces first: deleting one deletes its veth ends and their qdiscs with it.
  while read -r kind name; do
    [[ $kind == netns ]] && ns_exists "$name" && ip netns del "$name"
  done <"$STATE"
  # Then the name files, deepest first; a folder keeps anything we did not write.
  while read -r kind name; do
    if [[ $kind == etcdir ]]; then
      rm -f "$name/hosts"
      rmdir "$name" 2>/dev/null || true
    fi
  done < <(grep '^etcdir ' "$STATE" | sort -r -k2)
  rm -f "$STATE"
  rmdir "$STATE_DIR" 2>/dev/null || true
  [[ ${1:-} == quiet ]] || echo "$PROG: down"
}

do_status() {
  if [[ ! -f $STATE ]]; then echo "$PROG: down"; return 0; fi
  local n i name
  n=$(config hosts)
  echo "$PROG: $n hosts, rate $(config rate), delay $(config delay), loopback hostname $(config loopback_hostname)"
  for ((i = 1; i <= n; i++)); do
    name=$(host_name "$i")
    if ns_exists "$name"; then
      printf '%s %s %s\n' "$name" "$(ip -n "$name" -o -4 addr show dev eth0 | awk '{print $4}')" \
        "$(tc -n "$name" qdisc show dev eth0 | head -1)"
    else
      echo "$name missing"
    fi
  done
}

do_exec() {
  local host=${1:-}; shift || true
  [[ -n $host && $# -gt 0 ]] || usage
  recorded netns "$host" && [[ $host != "$SWITCH" ]] || die "no emulated host $host (see: $0 status)"
  exec ip netns exec "$host" "$@"
}

main() {
  local cmd=${1:-}; shift || true
  case $cmd in
    up) [[ $# -ge 1 ]] || usage; need_root "up $*"; need_tools; lock; do_up "$@" ;;
    down) need_root down; need_tools; lock; do_down ;;
    status) need_root status; do_status ;;
    exec) need_root exec; do_exec "$@" ;;
    *) usage ;;
  esac
}

main "$@"
