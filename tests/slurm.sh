#!/usr/bin/env bash
# A private one-node Slurm cluster for the Slurm tests: Debian's slurm-wlm and munge
# (installed when missing, as root), a config of its own (its own ports, state and spool
# folders under $SLURM_DIR, proctrack/linuxproc, task/none), munged, slurmctld and slurmd
# started and stopped by their pids. Sourced by tests/run.sh:
#   source tests/slurm.sh; start_slurm; ...; stop_slurm
# It exports SLURM_CONF (the tests' `sbatch`, `squeue`, `scancel` read it).

SLURM_DIR=${SLURM_DIR:-/tmp/sluice-slurm}

provide_slurm() {
  if command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1; then
    return 0
  fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing slurm-wlm and munge"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null; }
  else
    echo "tests/slurm.sh: install slurm-wlm and munge (Debian) for the Slurm tests" >&2
    return 1
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start_slurm() {
  provide_slurm || return 1
  stop_slurm
  rm -rf "$SLURM_DIR"
  mkdir -p "$SLURM_DIR"/{state,spool,log,munge-run}
  local host ctl_port d_port
  host=$(hostname -s)
  ctl_port=$(free_port)
  d_port=$(free_port)
  # munge: the key Debian's package made, or one of our own.
  if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key 2>/dev/null || true
  chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
  chown munge:munge "$SLURM_DIR/munge-run" 2>/dev/null || true
  # A munged that answers (the system's, or ours) is used; else ours is started.
  if ! (munge -n | unmunge) >/dev/null 2>&1; then
    runuser -u munge -- munged --pid-file="$SLURM_DIR/munge-run/munged.pid" 2>/dev/null ||
      munged --force --pid-file="$SLURM_DIR/munge-run/munged.pid"
    echo started >"$SLURM_DIR/munge-started"
    local j
    for j in $(seq 1 50); do
      (munge -n | unmunge) >/dev/null 2>&1 && break
      sleep 0.1
    done
  fi
  local cpus
  cpus=$(nproc)
  cat >"$SLURM_DIR/slurm.conf" <<EOF
ClusterName=sluice-test
SlurmctldHost=$host
SlurmctldPort=$ctl_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=600
MaxArraySize=10001
MaxJobCount=20000
SchedulerParameters=sched_interval=1,bf_interval=1
MessageTimeout=10
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
EOF
  export SLURM_CONF="$SLURM_DIR/slurm.conf"
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  local i
  for i in $(seq 1 100); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE 'idle|mixed|alloc'; then
      echo "tests/slurm.sh: Slurm $(sinfo -V | awk '{print $2}') on $host, partition debug ($cpus CPUs), SLURM_CONF=$SLURM_CONF"
      return 0
    fi
    sleep 0.2
  done
  echo "tests/slurm.sh: the cluster did not come up; its logs:" >&2
  tail -n 20 "$SLURM_DIR"/log/*.log >&2 || true
  return 1
}

stop_slurm() {
  local f pid i
  for f in "$SLURM_DIR/slurmd.pid" "$SLURM_DIR/slurmctld.pid" "$SLURM_DIR/munge-run/munged.pid"; do
    [[ -s $f ]] || continue
    [[ $f == */munged.pid && ! -f "$SLURM_DIR/munge-started" ]] && continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || continue
    # Gone before the next start looks for it.
    for i in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  done
}
