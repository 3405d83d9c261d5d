# shellcheck shell=bash
# Shell helpers for slurm/dev-cluster.sh. Source it: . slurm/lib.sh

say() { printf '[dev-cluster] %s\n' "$*"; }
die() { printf '[dev-cluster] error: %s\n' "$*" >&2; exit 1; }

# pid_alive FILE COMM: true when FILE holds the pid of a running process named COMM
# (a stale file whose pid was reused by another program does not count).
pid_alive() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

# stop_by_pidfile FILE COMM [TIMEOUT_S]
#   SIGTERM the pid in FILE if it is COMM, wait up to TIMEOUT_S, then SIGKILL; remove FILE.
#   Removing FILE matters: a stale /run/slurmctld.pid makes slurmctld's prerm (apt-get purge)
#   run scancel and fail.
stop_by_pidfile() {
  local file=$1 comm=$2 timeout=${3:-10} pid
  if pid_alive "$file" "$comm"; then
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq $((timeout * 5))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      say "warning: $comm ($pid) ignored SIGTERM for ${timeout}s, sending SIGKILL" >&2
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

# wait_until TIMEOUT_S CMD...: poll CMD every 0.5 s until it succeeds
wait_until() {
  local timeout=$1
  shift
  for _ in $(seq $((timeout * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  return 1
}

# missing_packages PKG...: print the Debian packages that are not installed
missing_packages() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
  done
}
