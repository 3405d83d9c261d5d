#!/usr/bin/env bash
# Single-node SLURM on localhost for development and CI: munged + slurmctld + slurmd, as root.
#
#   bash slurm/dev-cluster.sh start    install when missing, (re)configure, start, smoke-test
#   bash slurm/dev-cluster.sh stop     cancel every job, stop the daemons this script started
#   bash slurm/dev-cluster.sh status   sinfo; exit status 0 only when the node takes jobs
#
# No systemd and no cgroups: proctrack/linuxproc + task/none, daemons started by hand and stopped
# through their pid files. `start` is idempotent: with the same slurm.conf and the daemons up it
# only re-runs the smoke test. Tested on Debian 12 (slurm-wlm 22.05).
#
# Environment:
#   SLURM_CPUS=4          CPUs advertised to SLURM; may exceed nproc (config_overrides), so that
#                         several 1-core jobs run at once on a 2-core machine
#   SLURM_PARTITION=debug partition name (the slurm-local cluster profile expects "debug")
#   SLURM_MEM_MB          RealMemory in MB; default 90 % of MemAvailable, rounded down to whole GiB
#   SLURM_SMOKE=1         0 skips the sbatch smoke test at the end of `start`
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# shellcheck source=slurm/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SLURM_CPUS=${SLURM_CPUS:-4}
SLURM_PARTITION=${SLURM_PARTITION:-debug}
SLURM_SMOKE=${SLURM_SMOKE:-1}
CONF=/etc/slurm/slurm.conf
JOBCOMP_LOG=/var/log/slurm/jobcomp.log
STATE_DIR=/run/tcr-dev-cluster           # marks what this script started
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGED_PID=/run/munge/munged.pid

node_up() { sinfo -h -N -o '%T' 2>/dev/null | grep -qxE 'idle|mixed|allocated|completing'; }

# node_up_or_resume: node_up, after resuming a node left drained (by hand, or by an earlier run
# killed mid-job); ReturnToService=2 only brings back nodes that were DOWN.
node_up_or_resume() {
  if sinfo -h -N -o '%T' 2>/dev/null | grep -q '^drain'; then
    scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
  fi
  node_up
}

install_packages() {
  local missing
  missing=$(missing_packages slurm-wlm munge)
  [ -z "$missing" ] && return 0
  say "installing: $(echo "$missing" | tr '\n' ' ')"
  apt-get update -qq
  # slurm-wlm = slurmctld + slurmd + client tools. Without systemd the init scripts do not start
  # anything during the install (they exit 0 while there is no slurm.conf).
  # shellcheck disable=SC2086  # one package name per word
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

start_munge() {
  # Debian's postinst creates the key; create one if a previous purge removed it.
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0600 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged   # forks; writes /run/munge/munged.pid
    touch "$STATE_DIR/munged"
  fi
  wait_until 10 sh -c 'munge -n | unmunge' || die "munged does not answer (see /var/log/munge/munged.log)"
}

# write_conf: write slurm.conf for this host; sets CONF_CHANGED=1 when its content changed.
# (A status variable, not the return code: `set -e` is off inside a function called from `&&`.)
write_conf() {
  local host mem old tmp
  host=$(hostname -s)
  # RealMemory above what the node has would drain it: 90 % of MemAvailable, in whole GiB.
  mem=$(awk '/MemAvailable/ { m = int($2 / 1024 * 0.9); g = int(m / 1024) * 1024;
                              print (g > 0 ? g : m) }' /proc/meminfo)
  # MemAvailable moves with whatever else runs: keep the value already configured while it is
  # within 10 % of the new one, so that `start` does not restart the daemons for a small swing.
  old=
  [ -s "$CONF" ] && old=$(sed -n 's/^NodeName=.* RealMemory=\([0-9]*\).*/\1/p' "$CONF" | head -n 1)
  if [ -n "$old" ] && [ $((old * 10)) -ge $((mem * 9)) ] && [ $((old * 10)) -le $((mem * 11)) ]; then
    mem=$old
  fi
  mem=${SLURM_MEM_MB:-$mem}
  install -d -o slurm -g slurm -m 0755 /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  tmp=$(mktemp)
  cat >"$tmp" <<CONF
# Written by slurm/dev-cluster.sh: a single-node development cluster. Edits are overwritten.
ClusterName=tcr-dev
# name(addr): no DNS lookup of the host name is needed
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
# a requeued job waits cred_expire + 1 s before it may start again (default 120 s); the
# requeue test (tests/test_slurm_sbatch.py) would otherwise wait two minutes
AuthInfo=cred_expire=10
MpiDefault=none
SwitchType=switch/none
# no cgroups: /proc based process tracking, no task confinement
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
# no slurmdbd (so no sacct); the text completion log records every finished job instead
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${JOBCOMP_LOG}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job that asks for no memory would get the whole node
DefMemPerCPU=1024
ReturnToService=2
# trust CPUs/RealMemory below rather than the detected hardware (lets CPUs exceed nproc)
SlurmdParameters=config_overrides
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${SLURM_CPUS} RealMemory=${mem} State=UNKNOWN
PartitionName=${SLURM_PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  CONF_CHANGED=0
  if cmp -s "$tmp" "$CONF"; then
    rm -f "$tmp"
    return 0
  fi
  CONF_CHANGED=1
  install -m 0644 "$tmp" "$CONF"
  rm -f "$tmp"
  say "wrote $CONF (CPUs=$SLURM_CPUS RealMemory=${mem}MB partition=$SLURM_PARTITION)"
}

start_slurm() {
  write_conf
  if [ "$CONF_CHANGED" = 1 ] || ! pid_alive "$CTLD_PID" slurmctld || ! pid_alive "$SLURMD_PID" slurmd; then
    stop_by_pidfile "$SLURMD_PID" slurmd
    stop_by_pidfile "$CTLD_PID" slurmctld
    /usr/sbin/slurmctld   # both fork and write their pid files
    /usr/sbin/slurmd      # "can not load PMIx library" in slurmd.log is harmless
    say "started slurmctld and slurmd"
  else
    say "slurmctld and slurmd already running with this slurm.conf"
  fi
  if ! wait_until 60 node_up_or_resume; then
    sinfo -N -l || true
    tail -n 30 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    die "the node did not come up"
  fi
  sinfo -N -l
}

smoke_test() {
  local jid out
  out=$(mktemp -d)
  # shellcheck disable=SC2016  # expanded inside the job, not here
  jid=$(sbatch --parsable -p "$SLURM_PARTITION" -t 1 --mem=100M -o "$out/smoke-%j.out" \
    --wrap 'echo "job $SLURM_JOB_ID on $(hostname)"')
  wait_until 60 sh -c "! squeue -h -j $jid 2>/dev/null | grep -q ." || die "smoke job $jid did not finish"
  wait_until 10 grep -q "JobId=$jid .*JobState=COMPLETED" "$JOBCOMP_LOG" ||
    die "smoke job $jid is not COMPLETED in $JOBCOMP_LOG"
  say "smoke test: $(cat "$out/smoke-$jid.out")"
  rm -rf "$out"
}

cmd_start() {
  [ "$(id -u)" -eq 0 ] || die "start needs root (it installs packages and runs the daemons)"
  install -d -m 0755 "$STATE_DIR"
  install_packages
  start_munge
  start_slurm
  [ "$SLURM_SMOKE" = 0 ] || smoke_test
  say "SLURM is up: partition $SLURM_PARTITION, $SLURM_CPUS CPUs; stop with: bash $0 stop"
}

cmd_stop() {
  local jobs
  [ "$(id -u)" -eq 0 ] || die "stop needs root"
  if pid_alive "$CTLD_PID" slurmctld; then
    jobs=$(squeue -h -o '%i' 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      say "cancelling jobs: $(echo "$jobs" | tr '\n' ' ')"
      # shellcheck disable=SC2086  # one job id per word
      scancel $jobs || true
      # shellcheck disable=SC2016  # expanded by sh at each poll
      wait_until 30 sh -c '[ -z "$(squeue -h -o %i)" ]' || say "warning: jobs still listed after 30 s"
    fi
  fi
  stop_by_pidfile "$SLURMD_PID" slurmd
  stop_by_pidfile "$CTLD_PID" slurmctld
  # munged only when this script started it: another service may rely on a munged it found
  if [ -e "$STATE_DIR/munged" ]; then
    stop_by_pidfile "$MUNGED_PID" munged
    rm -f "$STATE_DIR/munged"
  fi
  say "stopped"
}

cmd_status() {
  command -v sinfo >/dev/null || { say "SLURM is not installed (run: bash $0 start)"; return 3; }
  local daemon file
  for daemon in munged:$MUNGED_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
    file=${daemon#*:}
    if pid_alive "$file" "${daemon%%:*}"; then
      say "${daemon%%:*}: running (pid $(cat "$file"))"
    else
      say "${daemon%%:*}: not running"
    fi
  done
  sinfo -N -l 2>&1 || true
  if node_up; then
    say "node is up"
  else
    say "node is not up"
    return 3
  fi
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: bash $0 start|stop|status" >&2; exit 2 ;;
esac
