#!/usr/bin/env bash
# A one-node SLURM cluster on 127.0.0.1 (Debian's SLURM 22.05), for the tests of
# `hydra/launcher=submitit_slurm` and for trying a sweep on SLURM on one machine. Run as root.
# Installs slurmctld, slurmd, the client commands, munge, and slurmdbd with MariaDB (submitit follows its
# jobs with `sacct`, which needs the accounting database); writes a munge key if there is none, and
# /etc/slurm/slurm.conf for this node (CPUs from nproc, memory from /proc/meminfo); starts munged, MariaDB,
# slurmdbd, slurmctld and slurmd; waits until `sinfo` shows the node idle.
# Idempotent: when the node and the accounting database already answer, it does nothing.
#
#   bash scripts/local-slurm.sh && sinfo
set -euo pipefail
CLUSTER=lambdaopt
NODE=$(hostname -s)
say() { echo "local-slurm: $*" >&2; }

node_state() { sinfo -h -N -o %T 2>/dev/null | head -n 1; }  # 'idle*': slurmd not responding
# the whole chain: the node, and slurmdbd reaching MariaDB (without it sacct fails and submitit cannot
# follow its jobs, while sinfo still shows the node idle)
if command -v sinfo > /dev/null && [[ "$(node_state)" =~ ^(idle|mixed|allocated)$ ]] \
        && sacctmgr -n list cluster > /dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then say "run as root (it installs packages and starts the daemons)"; exit 1; fi

if ! command -v slurmctld > /dev/null || ! command -v slurmdbd > /dev/null || ! command -v sinfo > /dev/null \
        || ! command -v munged > /dev/null || ! command -v mariadbd > /dev/null; then
    say "installing slurmctld slurmd slurm-client slurmdbd munge mariadb-server (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client slurmdbd munge mariadb-server > /dev/null
fi

# --- munge: one key shared by every daemon and client of the cluster
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
if ! munge -n > /dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
fi

# --- the accounting database (MariaDB on its socket only) and slurmdbd
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! mysqladmin ping > /dev/null 2>&1; then
    # in its own session: it must outlive the process (a test run) that started it
    setsid mariadbd-safe --skip-networking > /dev/null 2>&1 < /dev/null &
    for _ in $(seq 60); do mysqladmin ping > /dev/null 2>&1 && break; sleep 0.5; done
fi
mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
          CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
EOF
chmod 600 /etc/slurm/slurmdbd.conf

# --- this node: all its CPUs, its memory less 1 GiB for the system
CPUS=$(nproc)
MEMORY_MB=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 - 1024}' /proc/meminfo)
# KillWait: seconds between scancel's SIGTERM and SIGKILL, enough for a job to write its checkpoint.
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=20
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEMORY_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

pgrep -x slurmdbd > /dev/null || slurmdbd
for _ in $(seq 60); do sacctmgr -n list cluster > /dev/null 2>&1 && break; sleep 0.5; done
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" > /dev/null
pgrep -x slurmctld > /dev/null || slurmctld
for _ in $(seq 60); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
pgrep -x slurmd > /dev/null || slurmd
# a node left DOWN by an earlier, unclean stop comes back
scontrol update nodename="$NODE" state=resume > /dev/null 2>&1 || true
for _ in $(seq 120); do
    [ "$(node_state)" = idle ] && { say "node $NODE idle ($CPUS CPUs, ${MEMORY_MB} MB)"; exit 0; }
    sleep 0.5
done
say "the node did not become idle within 60 s: $(sinfo -N 2>&1 | tail -n 1); see /var/log/slurm/"
exit 1
