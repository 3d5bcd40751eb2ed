#!/usr/bin/env bash
# Starts a throw-away Slurm 22.05 cluster on this machine for tests: munge,
# slurmctld and two slurmd nodes (n1, n2) on 127.0.0.1, all run by hand (PID 1
# need not be systemd). Prints the slurm.conf path; export SLURM_CONF=<it>.
#   scripts/start-slurm.sh DIR      start
#   scripts/start-slurm.sh --stop DIR
# Needs Debian's slurm-wlm and munge, and root (jobs run as root).
set -euo pipefail
if [ "${1:-}" = "--stop" ]; then
  dir=$2
  for f in "$dir"/slurmd-n1.pid "$dir"/slurmd-n2.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  exit 0
fi
dir=$1
command -v slurmctld >/dev/null || { echo "start-slurm: slurm-wlm is not installed (apt-get install slurm-wlm munge)" >&2; exit 1; }
mkdir -p "$dir/state" "$dir/spool/n1" "$dir/spool/n2"
base=${SLURM_TEST_PORT:-16817}
cat > "$dir/slurm.conf" <<CONF
ClusterName=readsweep
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$base
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
NodeName=n1 NodeAddr=127.0.0.1 Port=$((base + 1)) CPUs=1 State=UNKNOWN
NodeName=n2 NodeAddr=127.0.0.1 Port=$((base + 2)) CPUs=1 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$dir/slurm.conf
# munge: its key comes with the package; its socket directory must belong to munge.
mkdir -p /run/munge && chown munge:munge /run/munge
if [ ! -S /run/munge/munge.socket.2 ] || ! munge -n >/dev/null 2>&1; then
  [ -f /etc/munge/munge.key ] || { runuser -u munge -- /usr/sbin/mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; }
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  cp /run/munge/munged.pid "$dir/munged.pid" 2>/dev/null || true
fi
slurmctld -f "$dir/slurm.conf"
slurmd -f "$dir/slurm.conf" -N n1
slurmd -f "$dir/slurm.conf" -N n2
for _ in $(seq 60); do
  if [ "$(sinfo -h -o %T 2>/dev/null | grep -c idle)" -ge 1 ]; then break; fi
  sleep 0.5
done
sinfo -h -N -o "%N %T" >&2
echo "$dir/slurm.conf"
