#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, without systemd, for trying the sbatch
# scripts beside this file (and for tests/slurm.rs). Root only; everything lives in DIR.
#
#   contrib/slurm/local-cluster.sh up DIR     # munged, slurmctld and slurmd, DIR/slurm.conf
#   SLURM_CONF=DIR/slurm.conf sbatch …        # use it
#   contrib/slurm/local-cluster.sh down DIR   # stop what `up` started, remove DIR
#
# Debian: apt-get install slurmctld slurmd slurm-client munge.
set -euo pipefail

action=${1:?usage: local-cluster.sh up|down DIR}
dir=${2:?usage: local-cluster.sh up|down DIR}

stop() {
    for daemon in slurmd slurmctld munged; do
        if [[ -f "$dir/$daemon.pid" ]]; then
            pid=$(cat "$dir/$daemon.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
}

case "$action" in
up)
    for bin in munged slurmctld slurmd sbatch; do
        command -v "$bin" >/dev/null || { echo "$bin is not installed (Debian: apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 2; }
    done
    mkdir -p "$dir"/{state,spool,munge}
    dir=$(cd "$dir" && pwd)
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
    # munge: a key of our own and a socket in DIR, so a host's munged is left alone.
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$dir/munge/munge.key"
    chmod 0700 "$dir/munge"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
    # Ports of our own (a host's Slurm keeps 6817/6818).
    port=$((20000 + RANDOM % 20000))
    cat > "$dir/slurm.conf" <<CONF
ClusterName=anyedge-local
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$dir/slurm.conf"
    slurmd -f "$dir/slurm.conf"
    # Ready when the node takes jobs.
    for _ in $(seq 100); do
        if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            echo "slurm up: SLURM_CONF=$dir/slurm.conf"
            exit 0
        fi
        sleep 0.2
    done
    echo "slurm did not come up; logs in $dir" >&2
    tail -5 "$dir"/*.log >&2 || true
    stop
    exit 1
    ;;
down)
    [[ -d "$dir" ]] || exit 0
    stop
    rm -rf "$dir"
    ;;
*)
    echo "usage: local-cluster.sh up|down DIR" >&2
    exit 2
    ;;
esac
