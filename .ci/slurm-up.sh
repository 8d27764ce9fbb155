#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (for the SLURM tests): munged + slurmctld + slurmd, partition
# `debug`. Idempotent: exits at once when `sinfo` already shows an idle node. Installs Debian's slurm-wlm and munge
# with apt-get only when they are missing. Exit status: 0 = cluster up, non-zero = it could not be started (the
# SLURM tests then skip with the reason). Needs root. Log: $SLURM_UP_LOG (default /tmp/forgetbench-slurm/up.log).
set -uo pipefail

STATE=${FORGETBENCH_SLURM_STATE:-/tmp/forgetbench-slurm}
LOG=${SLURM_UP_LOG:-$STATE/up.log}
mkdir -p "$STATE"
say() { echo "slurm-up: $*" >&2; echo "$(date +%T) $*" >>"$LOG"; }

node_idle() { sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }

if command -v sinfo >/dev/null 2>&1 && node_idle; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "not root: cannot install or start slurm"; exit 3
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
    || ! command -v munged >/dev/null; then
  if ! command -v apt-get >/dev/null; then say "slurm is not installed and apt-get is missing"; exit 4; fi
  say "installing slurm-wlm and munge with apt-get (first time only)"
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout 900 apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$LOG" 2>&1; then
    timeout 300 apt-get update -q >>"$LOG" 2>&1
    timeout 900 apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$LOG" 2>&1 \
      || { say "apt-get install slurm-wlm munge failed (see $LOG)"; exit 5; }
  fi
fi

HOST=$(hostname -s)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MEM=$(( MEM_MB * 9 / 10 ))
CPUS=$(nproc)
CONF_DIR=/etc/slurm
mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge \
  /var/log/munge /etc/munge

# ---- munge: a key, then the daemon
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
chmod 0700 /etc/munge /var/lib/munge /var/log/munge; chmod 0755 /run/munge; chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- munged --force >>"$LOG" 2>&1 || munged --force >>"$LOG" 2>&1
  else
    munged --force >>"$LOG" 2>&1
  fi
fi
for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
munge -n </dev/null | unmunge >/dev/null 2>&1 || { say "munged did not start (see $LOG)"; exit 6; }

# ---- slurm.conf (rewritten when it differs)
cat >"$STATE/slurm.conf" <<EOF
# forgetbench one-node test cluster (written by .ci/slurm-up.sh)
ClusterName=forgetbench
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
ReturnToService=2
JobRequeue=1
MinJobAge=30
KillWait=5
InactiveLimit=0
Waittime=0
SchedulerParameters=sched_min_interval=100000
SlurmctldTimeout=30
SlurmdTimeout=60
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
if ! cmp -s "$STATE/slurm.conf" "$CONF_DIR/slurm.conf"; then
  cp "$STATE/slurm.conf" "$CONF_DIR/slurm.conf"
  restart=1
else
  restart=0
fi

if [ "$restart" = 1 ]; then
  pkill_pidfile() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null; rm -f "$1"; }
  pkill_pidfile /run/slurmd.pid; pkill_pidfile /run/slurmctld.pid; sleep 1
fi
pgrep -x slurmctld >/dev/null || slurmctld >>"$LOG" 2>&1 || { say "slurmctld failed to start (see $LOG, /var/log/slurm/slurmctld.log)"; exit 7; }
for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
pgrep -x slurmd >/dev/null || slurmd >>"$LOG" 2>&1 || { say "slurmd failed to start (see $LOG, /var/log/slurm/slurmd.log)"; exit 8; }

for _ in $(seq 150); do
  if node_idle; then say "up: node $HOST idle ($CPUS CPUs, ${REAL_MEM} MB)"; exit 0; fi
  state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1)
  case "$state" in down*|drain*|fail*) scontrol update nodename="$HOST" state=resume >>"$LOG" 2>&1 ;; esac
  sleep 0.2
done
say "node not idle after 30 s (sinfo: $(sinfo -h -N -o '%N %T %E' 2>&1 | head -3))"
exit 9
