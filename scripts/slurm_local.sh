#!/usr/bin/env bash
# A real one-node SLURM on this machine, with accounting, for the SLURM tests and for trying the
# profile by hand (as root):
#
#   scripts/slurm_local.sh install  # apt-get installs what is missing (also done by start)
#   scripts/slurm_local.sh start    # installs what is missing, starts the daemons, prints SLURM_CONF
#   scripts/slurm_local.sh status   # sinfo + the daemons' pids; exit 1 if one is down
#   scripts/slurm_local.sh stop     # stops every daemon it started
#
# then: export SLURM_CONF=$MGPIPE_SLURM_DIR/slurm.conf; sbatch / srun / sacct as usual.
#
# Everything lives in one folder, MGPIPE_SLURM_DIR (default /var/tmp/mgpipe-slurm): slurm.conf,
# slurmdbd.conf, a munge key of its own, a MariaDB data folder, spool, state, logs and pid files.
# Nothing in /etc is edited (one link is added where absent: see link_etc_conf). The daemons talk
# over 127.0.0.1: munged on its default unix socket (/run/munge; a running system munged is used
# instead), MariaDB on 127.0.0.1:$MGPIPE_SLURM_DB_PORT (default 3307) only, slurmctld, slurmd and
# slurmdbd on ports 6817/6818/6819 (MGPIPE_SLURM_PORT_BASE). SLURM 22.05 has no listen address:
# those three accept connections on every interface, but every request must carry a munge
# credential made with this folder's key (root-only), so only this machine's root can use them.
# One node, "localhost", with this machine's CPUs and memory (slurmd -C) and two GPUs that are
# not there (MGPIPE_SLURM_GPUS, default 2; 0 for none): SLURM accepts GPUs without devices where
# gres.conf names their files (AutoDetect=off) and the files exist (plain files in $DIR/dev), so
# jobs ask for, get and are accounted GPUs (sacct AllocTRES gres/gpu=N) as on a GPU cluster, and
# torch inside them finds no CUDA. Partition "debug", account "root". Accounting (slurmdbd + MariaDB) makes sacct work: the tests read it,
# and Snakemake's SLURM executor falls back to it where MinJobAge is short.
# Packages (Debian): slurm-wlm, slurmdbd, munge, mariadb-server.
set -euo pipefail

DIR=${MGPIPE_SLURM_DIR:-/var/tmp/mgpipe-slurm}
DB_PORT=${MGPIPE_SLURM_DB_PORT:-3307}
PORT=${MGPIPE_SLURM_PORT_BASE:-6817}
GPUS=${MGPIPE_SLURM_GPUS:-2}
CLUSTER=mgpipe
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

say() { echo "slurm_local: $*" >&2; }
die() { say "$*"; exit 1; }

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd slurmdbd munged mariadbd sacct; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]}; installing them needs root (apt-get install ${PACKAGES[*]})"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install ${PACKAGES[*]}"
    say "installing ${PACKAGES[*]}"
    # policy-rc.d keeps the packages' own services (on /etc's configs) from starting
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
}

running() {  # running NAME: its pid file names a live process
    [[ -s $DIR/run/$1.pid ]] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null
}

wait_for() {  # wait_for WHAT SECONDS COMMAND...
    local what=$1 seconds=$2; shift 2
    for ((i = 0; i < seconds * 4; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    die "$what did not come up in ${seconds}s; see $DIR/log/"
}

write_configs() {
    mkdir -p "$DIR"/{run,log,spool/ctld,spool/d,db,dev}
    chmod 755 "$DIR"  # munge clients need to reach the socket
    local cpus mem
    cpus=$(nproc)
    # slurmd -C reports the memory slurmd will see; keep 5% for the system
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$((mem * 95 / 100))
    [[ -s $DIR/munge.key ]] || { dd if=/dev/urandom bs=1 count=1024 of="$DIR/munge.key" 2>/dev/null; chmod 400 "$DIR/munge.key"; }
    [[ -s $DIR/db.password ]] || { head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DIR/db.password"; chmod 600 "$DIR/db.password"; }
    local gres="" node_gres="" i
    if ((GPUS > 0)); then
        # the stand-ins for /dev/nvidia0..: slurmd counts a GPU only where its file exists
        for ((i = 0; i < GPUS; i++)); do : > "$DIR/dev/gpu$i"; done
        gres=$'GresTypes=gpu\nAccountingStorageTRES=gres/gpu'
        node_gres=" Gres=gpu:$GPUS"
        printf 'AutoDetect=off\nNodeName=localhost Name=gpu File=%s\n' "$DIR/dev/gpu[0-$((GPUS - 1))]" > "$DIR/gres.conf"
    else
        rm -f "$DIR/gres.conf"
    fi
    cat > "$DIR/slurm.conf" <<EOF
# written by scripts/slurm_local.sh: one local node, loopback only
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no cgroups in containers: track processes by parent id
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
JobCompType=jobcomp/none
# sacct shows the comment, where the Snakemake executor writes the rule name
AccountingStoreFlags=job_comment
# SLURM's default: finished jobs stay visible to squeue for 5 minutes (the executor polls squeue)
MinJobAge=300
KillWait=5
InactiveLimit=0
$gres
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$node_gres State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$DIR/slurmdbd.conf" <<EOF
# written by scripts/slurm_local.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$DIR/db.password")
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"
}

start_munge() {
    running munged && return
    # A munged already answering on the default socket (a system one) serves us as it is: the
    # SLURM clients look for munge there whatever slurm.conf says.
    munge -n >/dev/null 2>&1 && return
    mkdir -p /run/munge
    # --force: munged refuses root otherwise; the key is this folder's own
    munged --force --key-file="$DIR/munge.key" --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/run/munge.seed"
    wait_for munged 10 munge -n
}

mysql_root() { mariadb --protocol=socket --socket="$DIR/run/mysqld.sock" -uroot "$@"; }

start_mariadb() {
    running mariadbd && return
    if [[ ! -d $DIR/db/mysql ]]; then
        mariadb-install-db --user=root --datadir="$DIR/db" --auth-root-authentication-method=socket \
            --skip-test-db > "$DIR/log/mariadb-install.log" 2>&1
    fi
    mariadbd --no-defaults --user=root --datadir="$DIR/db" --socket="$DIR/run/mysqld.sock" \
        --pid-file="$DIR/run/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --log-error="$DIR/log/mariadbd.log" --innodb-buffer-pool-size=64M \
        --innodb-lock-wait-timeout=900 > /dev/null 2>&1 &
    wait_for MariaDB 60 mysql_root -e "select 1"
    local pw
    pw=$(cat "$DIR/db.password")
    mysql_root -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pw';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
        CREATE DATABASE IF NOT EXISTS slurm_acct_db;"
}

start_slurm() {
    export SLURM_CONF=$DIR/slurm.conf
    # slurmdbd reads slurmdbd.conf from SLURM_CONF's folder
    running slurmdbd || slurmdbd
    wait_for slurmdbd 30 test -s "$DIR/run/slurmdbd.pid"
    wait_for slurmdbd 60 sacctmgr -n list cluster
    # the cluster must exist in the database before slurmctld registers
    sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
    running slurmctld || slurmctld
    wait_for slurmctld 60 scontrol ping
    running slurmd || slurmd -N localhost
    wait_for "the node" 60 sh -c 'sinfo -h -N -o %T | grep -qE "^(idle|mixed|allocated)"'
    sacctmgr -i -Q add account root cluster="$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -i -Q add user root account=root cluster="$CLUSTER" >/dev/null 2>&1 || true
}

stop_one() {
    local name=$1
    if running "$name"; then
        local pid
        pid=$(cat "$DIR/run/$name.pid")
        kill "$pid"
        for ((i = 0; i < 80; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$DIR/run/$name.pid"
}

# Snakemake's job-step executor (snakemake-executor-plugin-slurm-jobstep 0.6) drops every SLURM_*
# variable, SLURM_CONF included, before its srun inside a job, so the clients there read
# /etc/slurm/slurm.conf. Where that file is absent, it becomes a link to ours (removed on stop);
# an existing one is never touched.
ETC_CONF=/etc/slurm/slurm.conf
link_etc_conf() {
    if [[ ! -e $ETC_CONF && ! -L $ETC_CONF ]]; then
        mkdir -p "$(dirname "$ETC_CONF")"
        ln -s "$DIR/slurm.conf" "$ETC_CONF"
    elif [[ $(readlink "$ETC_CONF" || true) != "$DIR/slurm.conf" ]]; then
        say "warning: $ETC_CONF exists; jobs started by Snakemake read it, not $DIR/slurm.conf"
    fi
}

case ${1:-} in
    install)
        install_packages
        ;;
    start)
        [[ $(id -u) -eq 0 ]] || die "run as root (the daemons run as root, on loopback only)"
        install_packages
        write_configs
        start_munge
        start_mariadb
        start_slurm
        link_etc_conf
        say "up: export SLURM_CONF=$DIR/slurm.conf"
        echo "$DIR/slurm.conf"
        ;;
    stop)
        # jobs first, then the daemons in the reverse order of starting
        if running slurmctld; then SLURM_CONF=$DIR/slurm.conf scancel --user=root >/dev/null 2>&1 || true; fi
        for name in slurmd slurmctld slurmdbd mariadbd munged; do stop_one "$name"; done
        [[ $(readlink "$ETC_CONF" || true) == "$DIR/slurm.conf" ]] && rm -f "$ETC_CONF"
        say "stopped"
        ;;
    status)
        down=0
        for name in munged mariadbd slurmdbd slurmctld slurmd; do
            if running "$name"; then echo "$name: pid $(cat "$DIR/run/$name.pid")"; else echo "$name: down"; down=1; fi
        done
        [[ $down -eq 0 ]] && SLURM_CONF=$DIR/slurm.conf sinfo
        exit $down
        ;;
    *)
        echo "usage: $0 install|start|stop|status   (folder: $DIR)" >&2
        exit 2
        ;;
esac
