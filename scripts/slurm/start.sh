#!/usr/bin/env bash
# Starts a one-node Slurm on this machine for the CI's sharded-trace check: munged (as user munge, unless one
# already runs), slurmctld and slurmd, with state, spool, logs and slurm.conf in a temporary folder. Needs root and
# Debian's slurm-wlm and munge. Prints the folder; `source FOLDER/env` sets SLURM_CONF for sbatch/squeue;
# scripts/slurm/stop.sh FOLDER stops exactly the daemons this script started (by their PIDs).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "start.sh: needs root (slurmd runs jobs as their users)" >&2; exit 2; fi
for t in munged slurmctld slurmd sbatch; do command -v "$t" >/dev/null || { echo "start.sh: $t not found (apt-get install slurm-wlm munge)" >&2; exit 2; }; done
dir="$(mktemp -d /tmp/neurontrace-slurm.XXXXXX)"
chmod 755 "$dir"
mkdir -p "$dir/state" "$dir/spool"
host="$(hostname -s)"
cpus="$(nproc)"
cat > "$dir/slurm.conf" <<CONF
ClusterName=neurontrace-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=kill_invalid_depend
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
echo "export SLURM_CONF=$dir/slurm.conf" > "$dir/env"

if ! pgrep -x munged >/dev/null; then
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  [ -s /etc/munge/munge.key ] || { echo "start.sh: /etc/munge/munge.key missing (the munge package creates it)" >&2; exit 2; }
  # munged writes its pid file as user munge, so into /run/munge; the copy marks it as ours to stop.
  rm -f /run/munge/neurontrace-munged.pid
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/neurontrace-munged.pid
  for _ in $(seq 50); do [ -s /run/munge/neurontrace-munged.pid ] && break; sleep 0.1; done
  cp /run/munge/neurontrace-munged.pid "$dir/started-munged.pid"
fi
/usr/sbin/slurmctld -f "$dir/slurm.conf"
/usr/sbin/slurmd -f "$dir/slurm.conf"
export SLURM_CONF="$dir/slurm.conf"
for _ in $(seq 100); do
  if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then echo "$dir"; exit 0; fi
  sleep 0.2
done
echo "start.sh: the node did not become idle in 20 s; logs in $dir (slurmctld.log, slurmd.log)" >&2
sinfo >&2 || true
exit 1
