#!/usr/bin/env bash
# Test infrastructure (tests/slurm's fixture starts it): not part of hvdlm itself.
# A real single-node Slurm cluster on this machine, for the tests and for trying hvdlm.
#
#   sudo tests/infra/local-slurm.sh start     install what is missing, configure, start, wait until usable
#   sudo tests/infra/local-slurm.sh stop      stop exactly the daemons that `start` started (pid files)
#   sudo tests/infra/local-slurm.sh status    what runs
#   sudo tests/infra/local-slurm.sh check-state   create (0700) or check the state folder, print its path
#
# Debian's packages (slurmctld, slurmd, slurm-client, munge, slurmdbd, mariadb-server) are
# installed if missing. There is no systemd here and package scripts start nothing, so this
# script starts munged, MariaDB (own datadir), slurmdbd, slurmctld and slurmd itself. All state
# (configuration copy, spool, logs, pid files, database) lives in $SLURM_STATE (default
# /var/lib/hvdlm-slurm). The configuration is also written to /etc/slurm/, where Debian's Slurm
# commands read it, so `sbatch`, `sacct`, ... work without extra environment.
#
# The state folder is root's: before root writes or reads anything there (start, stop,
# check-state), it must be a real folder (not a symlink) owned by root and not writable by group
# or others, every folder above it must be owned by root and not writable by others (unless
# sticky, like /tmp), its daemon subfolders must belong to root or their daemon's user, and
# nothing in it may be a symlink. Otherwise the script refuses in one line and touches nothing:
# another user must not be able to pre-create the folder or plant a symlink that turns root's
# writes (lock, logs, slurm.conf, which is installed into /etc/slurm) into writes anywhere. A
# missing state folder is created with mode 0700. The lock is taken on the folder itself, so
# there is no lock file that a symlink could replace. Files root writes there are written through
# mktemp + mv or checked not to be symlinks first.
# Without $SLURM_STATE, a cluster still running from another state folder (the one named in
# /etc/slurm/slurm.conf, e.g. /tmp/hvdlm-slurm from before) is used, with the same checks, until
# `stop`; the next `start` then uses the default.
#
# Environment: SLURM_STATE (state folder), SLURM_CLUSTER (cluster name, default hvdlm),
# SLURM_DB_PORT (MariaDB TCP port on 127.0.0.1, default 3307), SLURM_START_TIMEOUT (seconds per
# wait, default 90), SLURM_CRED_EXPIRE (job credential lifetime, which is also how long a
# requeued job waits before it runs again; default 8, Slurm's own 120). A changed setting
# takes effect after `stop` and `start`; `start` leaves a running cluster as it is.
set -euo pipefail

DEFAULT_STATE=/var/lib/hvdlm-slurm
CLUSTER=${SLURM_CLUSTER:-hvdlm}
DB_PORT=${SLURM_DB_PORT:-3307}
DEADLINE=${SLURM_START_TIMEOUT:-90}
CRED_EXPIRE=${SLURM_CRED_EXPIRE:-8}
NODE=$(hostname -s)
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
MARKER="# written by hvdlm scripts/local-slurm.sh"  # unchanged since the move: it recognises older files
ETC=/etc/slurm
MUNGE_SOCKET_DIR=/run/munge

say() { echo "local-slurm: $*"; }
die() { echo "local-slurm: $*" >&2; exit 1; }

# pid in FILE if that process is alive and is program NAME; empty otherwise
pid_of() {
  local file=$1 name=$2 pid comm
  [[ -f $file && ! -L $file && -s $file ]] || return 0
  pid=$(tr -dc '0-9' <"$file")
  [[ -n $pid && -r /proc/$pid/comm ]] || return 0
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  # comm is truncated to 15 characters; mariadbd may show as mysqld on older packages
  case "$comm" in
    "$name"|"${name:0:15}") echo "$pid" ;;
    mysqld) [[ $name == mariadbd ]] && echo "$pid" ;;
  esac
  return 0
}

# an absolute path with the folders above it resolved (the last part itself is not followed)
resolve_state() {
  local path=$1 parent
  while [[ $path == */ && $path != / ]]; do path=${path%/}; done
  [[ $path == /* && $path != / ]] || { echo "$path"; return; }
  parent=${path%/*}
  parent=$(realpath -e -- "${parent:-/}" 2>/dev/null) || { echo "$path"; return; }
  echo "${parent%/}/${path##*/}"
}

# The state folder: $SLURM_STATE; else the folder of a cluster still running from the state named
# in our /etc/slurm/slurm.conf (e.g. /tmp/hvdlm-slurm of an earlier version); else the default.
ADOPTED=""
if [[ -n ${SLURM_STATE:-} ]]; then
  STATE=$(resolve_state "$SLURM_STATE")
else
  STATE=$DEFAULT_STATE
  if [[ -f $ETC/slurm.conf && ! -L $ETC/slurm.conf ]]; then
    IFS= read -r conf_line <"$ETC/slurm.conf" || true
    if [[ ${conf_line:-} == "$MARKER; state in /"* ]]; then
      conf_state=$(resolve_state "${conf_line#"$MARKER; state in "}")
      if [[ $conf_state != "$STATE" ]]; then
        for pid_name in munge/munged.pid:munged db/mariadbd.pid:mariadbd run/slurmdbd.pid:slurmdbd \
                        run/slurmctld.pid:slurmctld run/slurmd.pid:slurmd; do
          if [[ -n $(pid_of "$conf_state/${pid_name%%:*}" "${pid_name#*:}") ]]; then
            STATE=$conf_state ADOPTED=1
            break
          fi
        done
      fi
    fi
  fi
fi

RUN=$STATE/run          # pid files (owned by slurm)
LOG=$STATE/log          # slurm logs (owned by slurm)
DB=$STATE/db            # MariaDB datadir, socket, pid, error log (owned by mysql)
MUNGE=$STATE/munge      # munged pid, log, seed (owned by munge)

# daemon name -> pid file, process name (/proc/PID/comm), log file
declare -A PIDFILE=([munged]=$MUNGE/munged.pid [mariadbd]=$DB/mariadbd.pid
                    [slurmdbd]=$RUN/slurmdbd.pid [slurmctld]=$RUN/slurmctld.pid
                    [slurmd]=$RUN/slurmd.pid)
declare -A LOGFILE=([munged]=$MUNGE/munged.log [mariadbd]=$DB/mariadbd.err
                    [slurmdbd]=$LOG/slurmdbd.log [slurmctld]=$LOG/slurmctld.log
                    [slurmd]=$LOG/slurmd.log)
ORDER=(munged mariadbd slurmdbd slurmctld slurmd)

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# pid of a daemon we started, if it is alive and is that program; empty otherwise
daemon_pid() { pid_of "${PIDFILE[$1]}" "$1"; }

# ---------------------------------------------------------------------------------------------
# The state folder's safety (see the top of this file). Every refusal is one line on stderr.
refuse() { die "refusing state folder $STATE: $*"; }

# uid and octal mode of PATH itself (a symlink is not followed)
uid_mode() { stat -c '%u %a' -- "$1"; }

# PATH LABEL UID...: a real folder owned by one of UIDs and not writable by group or others
check_dir() {
  local path=$1 what=$2 uid mode ok=0 u; shift 2
  [[ ! -L $path ]] || refuse "$what is a symlink"
  [[ -d $path ]] || refuse "$what is not a folder"
  read -r uid mode < <(uid_mode "$path") || refuse "cannot stat $path"
  for u in "$@"; do [[ $uid == "$u" ]] && ok=1; done
  ((ok)) || refuse "$what is owned by uid $uid ($(id -nu "$uid" 2>/dev/null || echo '?')), not $(id -nu "$1" 2>/dev/null || echo "uid $1")"
  (( (8#$mode & 8#022) == 0 )) || refuse "$what is writable by group or others (mode $mode)"
}

# Create the state folder (0700) if missing and check it; start, stop and check-state call this
# before they touch anything in it.
prepare_state() {
  local base=${STATE##*/} parent=${STATE%/*} dir uid mode sub owner link
  parent=${parent:-/}
  [[ $STATE == /* && -n $base && $base != . && $base != .. ]] ||
    refuse "give an absolute path to a folder (SLURM_STATE)"
  [[ -d $parent ]] || refuse "$parent does not exist"
  # every folder above: root's, and not writable by others unless sticky (so that no one can
  # move root's folder away and put another in its place between this check and its use)
  dir=$parent
  while :; do
    [[ -d $dir && ! -L $dir ]] || refuse "$dir above it is not a real folder"
    read -r uid mode < <(uid_mode "$dir") || refuse "cannot stat $dir"
    [[ $uid == 0 ]] || refuse "$dir above it is owned by uid $uid, not root"
    if (( (8#$mode & 8#022) != 0 && (8#$mode & 8#1000) == 0 )); then
      refuse "$dir above it is writable by group or others without the sticky bit (mode $mode)"
    fi
    [[ $dir == / ]] && break
    dir=${dir%/*}; dir=${dir:-/}
  done
  if [[ ! -e $STATE && ! -L $STATE ]]; then
    (umask 077 && mkdir -- "$STATE") 2>/dev/null || refuse "cannot create it"
  fi
  check_dir "$STATE" "it" 0
  # the daemons' subfolders belong to root or to that daemon's user; nothing else
  for sub in etc:root slurmd:root run:slurm log:slurm slurmctld:slurm db:mysql munge:munge; do
    owner=${sub#*:}; sub=${sub%%:*}
    [[ -e $STATE/$sub || -L $STATE/$sub ]] || continue
    check_dir "$STATE/$sub" "its subfolder $sub" 0 $(id -u "$owner" 2>/dev/null || true)
  done
  link=$(find "$STATE" -type l -print -quit 2>&1) || refuse "cannot search it: $link"
  [[ -z $link ]] || refuse "it contains a symlink ($link); remove it"
}

# refuse to write through FILE if it is a symlink (the tree was checked; this guards the gap)
no_link() { [[ ! -L $1 ]] || die "refusing to write $1: it is a symlink"; }

# write stdin to FILE (mode MODE) through a new file beside it and a rename: never follows a link
write_file() {
  local file=$1 mode=$2 tmp
  tmp=$(mktemp -- "${file%/*}/.${file##*/}.XXXXXX")
  cat >"$tmp"
  chmod "$mode" -- "$tmp"
  mv -f -T -- "$tmp" "$file"
}

# lock the state folder itself (no lock file that could be a planted symlink)
lock_state() {
  exec 9<"$STATE"
  flock -w 600 9 || die "another local-slurm.sh holds the lock on $STATE"
}

adopted_note() {
  [[ -z $ADOPTED ]] || say "using the running cluster's state in $STATE (stop and start move it to $DEFAULT_STATE)"
}

show_log() {
  local file=$1
  if [[ -f $file ]]; then
    echo "---- last lines of $file ----" >&2
    tail -n 25 "$file" >&2
    echo "----" >&2
  else
    echo "(no log at $file)" >&2
  fi
}

# wait_for DESCRIPTION LOGFILE COMMAND...: poll COMMAND until it succeeds or the deadline passes
wait_for() {
  local what=$1 log=$2 t0=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - t0 >= DEADLINE )); then
      echo "local-slurm: timed out after ${DEADLINE}s waiting for $what" >&2
      show_log "$log"
      exit 1
    fi
    sleep 0.3
  done
}

# ---------------------------------------------------------------------------------------------
install_packages() {
  local missing=() p t0
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    say "packages already installed"
    return
  fi
  t0=$(now)
  say "installing ${missing[*]}"
  # No daemon may be started by package scripts: we start our own, with our own state folder.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get -y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
             -o Dpkg::Options::=--force-confold)
  no_link "$STATE/apt.log"
  if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1; then
    apt-get -q -o DPkg::Lock::Timeout=300 update >>"$STATE/apt.log" 2>&1 || true
    if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1; then
      ((own_policy)) && rm -f "$policy"
      show_log "$STATE/apt.log"
      die "apt-get install ${missing[*]} failed (log: $STATE/apt.log)"
    fi
  fi
  ((own_policy)) && rm -f "$policy"
  say "install took $(elapsed "$t0") s"
}

ensure_users() {
  local u
  for u in slurm munge mysql; do
    getent passwd "$u" >/dev/null ||
      useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
  done
}

ensure_munge_key() {
  local key=/etc/munge/munge.key
  if [[ ! -s $key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
    say "created $key"
  fi
  chown munge:munge /etc/munge "$key"
  chmod 700 /etc/munge
  chmod 400 "$key"
}

make_dirs() {
  # $STATE was checked by prepare_state: root's, no symlinks, no one else can write there
  (umask 022 && mkdir -p "$STATE/etc" "$RUN" "$LOG" "$STATE/slurmctld" "$STATE/slurmd" "$DB" \
                         "$MUNGE" "$MUNGE_SOCKET_DIR" "$ETC")
  chmod 755 "$STATE" "$STATE/etc"   # the daemons' users must reach their subfolders
  chown -h slurm:slurm "$RUN" "$LOG" "$STATE/slurmctld"
  chmod 755 "$RUN" "$LOG"
  chown -h munge:munge "$MUNGE" "$MUNGE_SOCKET_DIR"
  chmod 700 "$MUNGE"
  chmod 755 "$MUNGE_SOCKET_DIR"
  chown -h mysql:mysql "$DB"
  chmod 750 "$DB"
}

# copy a generated file to /etc/slurm, keeping (once) a configuration that is not ours
install_conf() {
  local src=$1 dst=$2 owner=$3 mode=$4
  if [[ -e $dst ]] && ! grep -qF "$MARKER" "$dst" 2>/dev/null && [[ ! -e $dst.hvdlm-orig ]]; then
    mv "$dst" "$dst.hvdlm-orig"
    say "kept the previous $dst as $dst.hvdlm-orig"
  fi
  install -o "$owner" -g "$owner" -m "$mode" "$src" "$dst"
}

write_config() {
  local cpus mem total_mb
  cpus=$(slurmd -C 2>/dev/null | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -n1)
  [[ -n $cpus ]] || cpus=$(nproc --all)
  total_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
  mem=$(( total_mb * 9 / 10 ))
  no_link "$STATE/etc/db-password"
  [[ -s $STATE/etc/db-password ]] ||
    head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | write_file "$STATE/etc/db-password" 600
  chmod 600 "$STATE/etc/db-password"

  write_file "$STATE/etc/slurm.conf" 644 <<EOF
$MARKER; state in $STATE
ClusterName=$CLUSTER
# explicit loopback addresses: works where the hostname does not resolve (the node is this machine)
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it runs again (default 120)
AuthInfo=cred_expire=$CRED_EXPIRE
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=${PIDFILE[slurmctld]}
SlurmdPidFile=${PIDFILE[slurmd]}
SlurmctldLogFile=${LOGFILE[slurmctld]}
SlurmdLogFile=${LOGFILE[slurmd]}
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
# jobs start at once; a requeued job starts within ~2 s of becoming eligible again
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$(( mem / cpus ))
JobRequeue=1
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Features=hvdlm State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

  write_file "$STATE/etc/slurmdbd.conf" 600 <<EOF
$MARKER; state in $STATE
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
SlurmUser=slurm
PidFile=${PIDFILE[slurmdbd]}
LogFile=${LOGFILE[slurmdbd]}
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$STATE/etc/db-password")
StorageLoc=slurm_acct_db
EOF
  install_conf "$STATE/etc/slurm.conf" "$ETC/slurm.conf" root 644
  install_conf "$STATE/etc/slurmdbd.conf" "$ETC/slurmdbd.conf" slurm 600
}

# ---------------------------------------------------------------------------------------------
# Each start_* does nothing when its daemon already runs; STARTED counts what was started.
STARTED=0

start_munged() {
  [[ -n $(daemon_pid munged) ]] && return
  rm -f "${PIDFILE[munged]}"
  no_link "$MUNGE/munged.out"
  runuser -u munge -- /usr/sbin/munged --pid-file="${PIDFILE[munged]}" --log-file="${LOGFILE[munged]}" \
    --seed-file="$MUNGE/munged.seed" </dev/null >>"$MUNGE/munged.out" 2>&1 9>&- ||
    { show_log "${LOGFILE[munged]}"; show_log "$MUNGE/munged.out"; die "munged did not start"; }
  wait_for "munged" "${LOGFILE[munged]}" sh -c 'munge -n | unmunge'
  STARTED=$((STARTED + 1))
}

db_sql() { mariadb --no-defaults -S "$DB/mysqld.sock" -u root "$@"; }

start_mariadbd() {
  [[ -n $(daemon_pid mariadbd) ]] && return
  rm -f "${PIDFILE[mariadbd]}"
  local fresh=0
  if [[ ! -d $DB/data/mysql ]]; then
    fresh=1
    rm -rf "$DB/data"
    no_link "$DB/install-db.log"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB/data" --skip-test-db \
      --auth-root-authentication-method=socket >"$DB/install-db.log" 2>&1 ||
      { show_log "$DB/install-db.log"; die "mariadb-install-db failed"; }
  fi
  setsid runuser -u mysql -- mariadbd --no-defaults --datadir="$DB/data" --socket="$DB/mysqld.sock" \
    --pid-file="${PIDFILE[mariadbd]}" --log-error="${LOGFILE[mariadbd]}" --bind-address=127.0.0.1 \
    --port="$DB_PORT" --skip-log-bin --innodb-buffer-pool-size=128M --innodb-log-file-size=64M \
    --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 9>&- &
  wait_for "MariaDB" "${LOGFILE[mariadbd]}" db_sql -e 'SELECT 1'
  wait_for "MariaDB pid file" "${LOGFILE[mariadbd]}" test -s "${PIDFILE[mariadbd]}"
  if ((fresh)) || ! db_sql -N -e "SELECT 1 FROM mysql.user WHERE user='slurm'" | grep -q 1; then
    local pw; pw=$(cat "$STATE/etc/db-password")
    db_sql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pw';
               CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
               GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
               GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  fi
  STARTED=$((STARTED + 1))
}

start_slurm_daemon() {  # name, then the command line
  local name=$1; shift
  [[ -n $(daemon_pid "$name") ]] && return
  rm -f "${PIDFILE[$name]}"
  no_link "${LOGFILE[$name]}"
  no_link "$LOG/$name.out"
  touch "${LOGFILE[$name]}"
  [[ $name == slurmd ]] || chown -h slurm:slurm "${LOGFILE[$name]}"
  "$@" </dev/null >>"$LOG/$name.out" 2>&1 9>&- ||
    { show_log "${LOGFILE[$name]}"; show_log "$LOG/$name.out"; die "$name did not start"; }
  wait_for "$name pid file" "${LOGFILE[$name]}" sh -c "test -n \"\$(cat '${PIDFILE[$name]}' 2>/dev/null)\""
  STARTED=$((STARTED + 1))
}

register_accounting() {
  # slurmdbd creates its tables on first start; sacctmgr answers once it is ready
  wait_for "slurmdbd to answer" "${LOGFILE[slurmdbd]}" sacctmgr -n -P show cluster format=cluster
  local q=(sacctmgr -i -Q)
  sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER" ||
    "${q[@]}" add cluster "$CLUSTER" >/dev/null
  sacctmgr -n -P show account format=account 2>/dev/null | grep -qx "$CLUSTER" ||
    "${q[@]}" add account "$CLUSTER" cluster="$CLUSTER" description=hvdlm organization=hvdlm >/dev/null
  local u
  for u in root ${SUDO_USER:-}; do
    sacctmgr -n -P show user "$u" format=user 2>/dev/null | grep -qx "$u" ||
      "${q[@]}" add user "$u" account="$CLUSTER" cluster="$CLUSTER" >/dev/null
  done
}

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n1; }
node_idle() { [[ $(node_state) == idle* ]]; }
# a short real job: 2 tasks through srun
srun_works() { timeout 30 srun -n2 -t 1 -J hvdlm-check hostname | grep -c . | grep -qx 2; }

cmd_start() {
  [[ $EUID -eq 0 ]] || die "start must run as root (it installs packages and starts system daemons)"
  local t0 running=1 name
  prepare_state
  lock_state
  adopted_note
  for name in "${ORDER[@]}"; do [[ -n $(daemon_pid "$name") ]] || running=0; done
  if ((running)) && [[ -n $(node_state) ]]; then
    say "already running (node $NODE: $(node_state); state in $STATE)"
    return 0
  fi
  install_packages
  t0=$(now)
  ensure_users
  ensure_munge_key
  make_dirs
  write_config
  start_munged
  start_mariadbd
  start_slurm_daemon slurmdbd slurmdbd
  register_accounting
  start_slurm_daemon slurmctld slurmctld
  wait_for "slurmctld to answer" "${LOGFILE[slurmctld]}" scontrol ping
  start_slurm_daemon slurmd slurmd
  # a node that was left DOWN/DRAINED by an earlier run comes back (ReturnToService covers most)
  if [[ $(node_state) == down* || $(node_state) == drain* ]]; then
    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
  fi
  wait_for "node $NODE to be idle" "${LOGFILE[slurmd]}" node_idle
  wait_for "a 2-task srun to work" "${LOGFILE[slurmd]}" srun_works
  say "started $STARTED daemon(s) in $(elapsed "$t0") s; cluster $CLUSTER, node $NODE ($(node_state)), state in $STATE"
}

cmd_stop() {
  [[ $EUID -eq 0 ]] || die "stop must run as root"
  prepare_state
  lock_state
  adopted_note
  local i name pid t0 stopped=0
  for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do
    name=${ORDER[i]}
    pid=$(daemon_pid "$name")
    if [[ -z $pid ]]; then
      rm -f "${PIDFILE[$name]}"
      continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    t0=$SECONDS
    while [[ -d /proc/$pid ]] && (( SECONDS - t0 < 30 )); do sleep 0.2; done
    if [[ -d /proc/$pid ]]; then
      say "$name ($pid) ignored SIGTERM for 30 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "${PIDFILE[$name]}"
    say "stopped $name ($pid)"
    stopped=$((stopped + 1))
  done
  ((stopped)) || say "nothing was running"
}

# status only reads (pid files, /proc) and may run as any user: it does not check the folder
cmd_status() {
  local name pid down=0
  adopted_note
  for name in "${ORDER[@]}"; do
    pid=$(daemon_pid "$name")
    if [[ -z $pid && -e ${PIDFILE[$name]} && ! -r ${PIDFILE[$name]} ]] ||
       [[ -z $pid && ! -r $(dirname "${PIDFILE[$name]}") ]]; then
      printf '%-10s unknown (cannot read %s: run as root)\n' "$name" "${PIDFILE[$name]}"
      down=1
    elif [[ -n $pid ]]; then
      printf '%-10s running (pid %s)\n' "$name" "$pid"
    else
      printf '%-10s not running\n' "$name"
      down=1
    fi
  done
  if command -v sinfo >/dev/null && [[ -n $(daemon_pid slurmctld) ]]; then
    sinfo -N -o '%N %P %T %C %m' 2>/dev/null || true
    squeue 2>/dev/null || true
  fi
  echo "state: $STATE"
  return $down
}

# check-state: what start and stop do before anything else, and nothing more (starts nothing);
# prints the state folder's path
cmd_check_state() {
  [[ $EUID -eq 0 ]] || die "check-state must run as root (the state folder is root's)"
  prepare_state
  echo "$STATE"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  check-state) cmd_check_state ;;
  *) echo "usage: $0 start|stop|status|check-state   (state in \$SLURM_STATE, default $DEFAULT_STATE)" >&2
     exit 2 ;;
esac
