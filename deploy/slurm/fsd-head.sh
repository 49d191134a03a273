#!/usr/bin/env bash
# On the head node of a Slurm job, after `ray start --head`: fsd-daemon and a Prometheus that
# streams everything to a long-term store run beside the training command, and stop when it
# ends (Prometheus flushes what it has not sent yet). No systemd: everything is a child of this
# script, and the job's end ends it. The cluster label is the Slurm job's
# (slurm-<SLURM_CLUSTER_NAME>-<SLURM_JOB_ID>) unless FSD_DAEMON_CLUSTER says otherwise.
#
#   fsd-head.sh [--work-dir DIR] [--prometheus-port PORT] --remote-write URL [OPTIONS] \
#       -- TRAINING COMMAND ...
#
# OPTIONS are `fsd-daemon prometheus-config` options (--remote-write-bearer-token-file FILE,
# --external-label NAME=VALUE, ...). --work-dir defaults to $TMPDIR/fsd-$SLURM_JOB_ID (logs,
# the Prometheus config and data, the target files, `pids`), --prometheus-port to 9090.
# RAY_ADDRESS names the head's GCS (as `ray start --head` printed it); FSD_* variables
# configure the daemon as anywhere. The exit status is the training command's.
set -euo pipefail

work=${TMPDIR:-/tmp}/fsd-${SLURM_JOB_ID:-$$}
port=9090
prom_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case $1 in
        --work-dir) work=$2; shift 2 ;;
        --prometheus-port) port=$2; shift 2 ;;
        *) prom_args+=("$1"); shift ;;
    esac
done
if [ $# -lt 2 ]; then
    echo "usage: fsd-head.sh [--work-dir DIR] [--prometheus-port PORT] --remote-write URL" \
        "[prometheus-config options] -- TRAINING COMMAND ..." >&2
    exit 2
fi
shift  # the --
export FSD_DAEMON_OUTPUT_DIR=${FSD_DAEMON_OUTPUT_DIR:-$work/targets}

# Checked before anything starts: a bad URL or option is one line and exit 2.
prometheus_yml=$(fsd-daemon prometheus-config "${prom_args[@]}")
mkdir -p "$work"
printf '%s\n' "$prometheus_yml" > "$work/prometheus.yml"

pids=()
stop() {
    # Prometheus first: it sends what is queued before it exits.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop EXIT
trap 'exit 143' TERM INT   # Slurm's end of the job: run the EXIT trap, then go

fsd-daemon run --no-watch > "$work/fsd-daemon.log" 2>&1 &
daemon=$!
pids=("$daemon")
# Prometheus watches the targets directory only if it exists when Prometheus starts.
until [ -e "$FSD_DAEMON_OUTPUT_DIR/rollout.json" ]; do
    kill -0 "$daemon" 2>/dev/null || { echo "fsd-daemon exited; see $work/fsd-daemon.log" >&2; exit 1; }
    sleep 0.5
done
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$port" > "$work/prometheus.log" 2>&1 &
pids=("$!" "$daemon")
echo "${pids[*]}" > "$work/pids"

"$@"
