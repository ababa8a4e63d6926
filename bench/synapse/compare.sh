#!/usr/bin/env bash
# Side-by-side benchmark: Tern against Synapse, the same load generator
# (tern-bench) and the same workloads, each run on a fresh server with a
# fresh data directory. See README.md beside this file.
#
#   bench/synapse/compare.sh              # defaults: 3 runs of each workload
#   RUNS=1 DURATION=3 bench/synapse/compare.sh   # a quick check
#
# Environment (all optional):
#   RUNS=3                 runs per server and workload
#   TERN_RUNS, SYNAPSE_RUNS  per-server run counts (default: RUNS)
#   SERVERS="tern synapse" which servers, in this order
#   WORKLOADS="max rate"   which workloads, in this order
#   DURATION=10            seconds of sending per run
#   RATE=1000              offered msgs/s of the `rate` workload
#   TERN_RATE, SYNAPSE_RATE  per-server rate (default: RATE)
#   MAX_ARGS               tern-bench args of `max`  (default: --users 8 --concurrency 32 --duration $DURATION)
#   RATE_ARGS              tern-bench args of `rate` before --rate (default: --users 10 --room-size 10 --duration $DURATION)
#   TERN_DRAIN=10, SYNAPSE_DRAIN=30  --drain: longest wait for outstanding deliveries
#   SYNAPSE_VENV=$HOME/.cache/tern-synapse-venv   created if missing, reused if present
#   PYTHON=python3         interpreter the venv is made from
#   CARGO_TARGET_DIR=$HOME/.cache/tern-target     where the Tern binaries are
#   TERN_SERVER_BIN, TERN_BENCH_BIN               explicit binary paths
#   OUT=/tmp/tern-vs-synapse-<timestamp>          output directory
#   STARTUP_TIMEOUT=180    seconds to wait for a server's /versions
#   QUIET_WAIT=120         before each run, wait up to this long for the
#                          machine to be idle (other processes < QUIET_CORES
#                          cores); 0 disables. Proceeds anyway after it.
#   QUIET_CORES=0.3
#   KEEP_DATA=0            1 keeps each run's server data directory (databases)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

RUNS=${RUNS:-3}
TERN_RUNS=${TERN_RUNS:-$RUNS}
SYNAPSE_RUNS=${SYNAPSE_RUNS:-$RUNS}
SERVERS=${SERVERS:-tern synapse}
WORKLOADS=${WORKLOADS:-max rate}
DURATION=${DURATION:-10}
RATE=${RATE:-1000}
TERN_RATE=${TERN_RATE:-$RATE}
SYNAPSE_RATE=${SYNAPSE_RATE:-$RATE}
MAX_ARGS=${MAX_ARGS:---users 8 --concurrency 32 --duration $DURATION}
RATE_ARGS=${RATE_ARGS:---users 10 --room-size 10 --duration $DURATION}
TERN_DRAIN=${TERN_DRAIN:-10}
SYNAPSE_DRAIN=${SYNAPSE_DRAIN:-30}
SYNAPSE_VENV=${SYNAPSE_VENV:-$HOME/.cache/tern-synapse-venv}
PYTHON=${PYTHON:-python3}
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/tern-target}
TERN_SERVER_BIN=${TERN_SERVER_BIN:-$TARGET/release/homeserver}
TERN_BENCH_BIN=${TERN_BENCH_BIN:-$TARGET/release/tern-bench}
OUT=${OUT:-/tmp/tern-vs-synapse-$(date -u +%Y%m%dT%H%M%SZ)}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-180}
QUIET_WAIT=${QUIET_WAIT:-120}
QUIET_CORES=${QUIET_CORES:-0.3}
KEEP_DATA=${KEEP_DATA:-0}
STOP_GRACE=15

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/compare.log" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup
# Every process this script starts in the background is recorded here and
# stopped on any exit, including errors and Ctrl-C.
SERVER_PID=""
BENCH_PID=""

stop_pid() { # pid [grace seconds]: SIGTERM, then SIGKILL after the grace period
    local pid=$1 grace=${2:-$STOP_GRACE} i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still running ${grace}s after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$BENCH_PID" 2
    BENCH_PID=""
    stop_pid "$SERVER_PID"
    SERVER_PID=""
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

random_secret() {
    "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))'
}

# Busy CPU (all processes) in cores over one second, from /proc/stat.
machine_busy_cores() {
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN {
        split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; if (t <= 0) { print 0; exit }
        printf "%.2f\n", (y[1] - x[1]) / t * n }'
}

# The machine is shared: before each run wait (boundedly) until nothing
# else is busy, so that the figures are not someone else's compile.
wait_quiet() {
    local label=$1 start=$SECONDS busy=""
    ((QUIET_WAIT > 0)) || return 0
    while :; do
        busy=$(machine_busy_cores)
        if awk -v b="$busy" -v m="$QUIET_CORES" 'BEGIN { exit !(b < m) }'; then
            ((SECONDS - start > 1)) && log "machine quiet after $((SECONDS - start)) s (busy $busy cores)"
            return 0
        fi
        if ((SECONDS - start >= QUIET_WAIT)); then
            log "warning: machine still busy ($busy cores) after ${QUIET_WAIT}s; running $label anyway"
            echo "$label: started with the machine busy ($busy cores from other processes)" >>"$OUT/notes.txt"
            return 0
        fi
        sleep 4
    done
}

wait_ready() { # port pid log
    local port=$1 pid=$2 logf=$3 start=$SECONDS
    while ! curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/_matrix/client/versions" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$logf" >&2 || true
            die "server (pid $pid) exited before answering /versions; log: $logf"
        fi
        ((SECONDS - start < STARTUP_TIMEOUT)) || die "server did not answer /versions within ${STARTUP_TIMEOUT}s; log: $logf"
        sleep 0.2
    done
    echo $((SECONDS - start))
}

# ---------------------------------------------------------------- setup
mkdir -p "$OUT" || { echo "cannot create $OUT" >&2; exit 1; }
OUT=$(cd "$OUT" && pwd)
: >"$OUT/compare.log"
log "output directory: $OUT"

for s in $SERVERS; do
    case $s in tern | synapse) ;; *) die "unknown server '$s' in SERVERS (tern, synapse)" ;; esac
done
for w in $WORKLOADS; do
    case $w in max | rate) ;; *) die "unknown workload '$w' in WORKLOADS (max, rate)" ;; esac
done
command -v curl >/dev/null || die "curl is needed"

# Tern binaries: build only when missing.
if [[ ! -x $TERN_SERVER_BIN || ! -x $TERN_BENCH_BIN ]]; then
    log "Tern binaries missing; building (cargo build --release -p homeserver -p tern-bench)"
    (cd "$REPO" && CARGO_TARGET_DIR=$TARGET cargo build --release -p homeserver -p tern-bench)
fi
# Snapshot them: others may rebuild the target directory while this runs.
mkdir -p "$OUT/bin"
cp "$TERN_SERVER_BIN" "$OUT/bin/homeserver"
cp "$TERN_BENCH_BIN" "$OUT/bin/tern-bench"
TERN=$OUT/bin/homeserver
BENCH=$OUT/bin/tern-bench

# Synapse: its own venv, from PyPI, pinned in requirements.txt.
SYN_PY=$SYNAPSE_VENV/bin/python
if [[ " $SERVERS " == *" synapse "* ]]; then
    if [[ ! -x $SYN_PY ]]; then
        log "creating venv $SYNAPSE_VENV"
        "$PYTHON" -m venv "$SYNAPSE_VENV"
    fi
    log "installing Synapse into $SYNAPSE_VENV (pip, requirements.txt)"
    "$SYN_PY" -m pip install --quiet -r "$HERE/requirements.txt" >>"$OUT/pip.log" 2>&1 ||
        die "pip install of Synapse failed; see $OUT/pip.log"
    "$SYN_PY" -m pip freeze >"$OUT/synapse-pip-freeze.txt"
fi

# ---------------------------------------------------------------- versions
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "tern commit: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
    dirty=$(git -C "$REPO" status --porcelain 2>/dev/null | grep -c . || true)
    echo "tern work tree: $([[ ${dirty:-0} == 0 ]] && echo clean || echo "$dirty uncommitted change(s)")"
    echo "tern homeserver binary: sha256 $(sha256sum "$TERN" | cut -c1-16), built $(date -u -r "$TERN_SERVER_BIN" +%Y-%m-%dT%H:%M:%SZ)"
    echo "tern-bench: $("$BENCH" --version)"
    if [[ " $SERVERS " == *" synapse "* ]]; then
        echo "synapse: $("$SYN_PY" -c 'import synapse; print(synapse.__version__)')"
        echo "synapse python: $("$SYN_PY" -c 'import platform; print(platform.python_implementation(), platform.python_version())')"
    fi
    echo "nproc: $(nproc)"
    echo "cpu: $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
    echo "memory: $(awk '/^MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -sr)"
    for s in $SERVERS; do
        case $s in
        tern) echo "tern runs: $TERN_RUNS per workload, --drain $TERN_DRAIN" ;;
        synapse) echo "synapse runs: $SYNAPSE_RUNS per workload, --drain $SYNAPSE_DRAIN" ;;
        esac
    done
} >"$OUT/versions.txt"
cat "$OUT/versions.txt" | tee -a "$OUT/compare.log" >&2

# ---------------------------------------------------------------- servers
start_tern() { # run_dir port
    local dir=$1 port=$2
    mkdir -p "$dir/data"
    "$TERN" --listen "127.0.0.1:$port" --server-name localhost --data-dir "$dir/data" \
        --allow-registration --disable-rate-limits >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
}

start_synapse() { # run_dir port
    local dir=$1 port=$2 data=$1/data
    mkdir -p "$data"
    sed -e "s|@DATA_DIR@|$data|g" -e "s|@PORT@|$port|g" \
        -e "s|@MACAROON_SECRET_KEY@|$(random_secret)|g" -e "s|@FORM_SECRET@|$(random_secret)|g" \
        "$HERE/homeserver.yaml.in" >"$data/homeserver.yaml"
    sed -e "s|@LOG_FILE@|$dir/synapse.log|g" "$HERE/log.yaml.in" >"$data/log.yaml"
    # Makes the signing key; then exits.
    "$SYN_PY" -m synapse.app.homeserver -c "$data/homeserver.yaml" --generate-keys \
        >"$dir/server.log" 2>&1 || die "synapse --generate-keys failed; see $dir/server.log"
    # One process, in the foreground (no daemonize): $! is Synapse itself.
    "$SYN_PY" -m synapse.app.homeserver -c "$data/homeserver.yaml" >>"$dir/server.log" 2>&1 &
    SERVER_PID=$!
}

# ---------------------------------------------------------------- runs
printf 'server\tworkload\truns\targs\n' >"$OUT/plan.tsv"
failures=0
for server in $SERVERS; do
    case $server in
    tern) runs=$TERN_RUNS rate=$TERN_RATE drain=$TERN_DRAIN ;;
    synapse) runs=$SYNAPSE_RUNS rate=$SYNAPSE_RATE drain=$SYNAPSE_DRAIN ;;
    esac
    for workload in $WORKLOADS; do
        case $workload in
        max) args="$MAX_ARGS --drain $drain" ;;
        rate) args="$RATE_ARGS --rate $rate --drain $drain" ;;
        esac
        printf '%s\t%s\t%s\t%s\n' "$server" "$workload" "$runs" "$args" >>"$OUT/plan.tsv"
        for ((run = 1; run <= runs; run++)); do
            label="$server/$workload/run$run"
            dir=$OUT/runs/$server/$workload/run$run
            mkdir -p "$dir"
            wait_quiet "$label"
            port=$(free_port)
            "start_$server" "$dir" "$port"
            ready_s=$(wait_ready "$port" "$SERVER_PID" "$dir/server.log")
            log "$label: $server pid $SERVER_PID ready on 127.0.0.1:$port after ${ready_s}s"
            # shellcheck disable=SC2086 # args are a word list on purpose
            cmd=("$BENCH" --url "http://127.0.0.1:$port" $args --server-pid "$SERVER_PID" --json "$dir/bench.json")
            printf '%q ' "${cmd[@]}" >"$dir/cmd.txt"
            echo >>"$dir/cmd.txt"
            "${cmd[@]}" >"$dir/bench.out" 2>&1 &
            BENCH_PID=$!
            rc=0
            wait "$BENCH_PID" || rc=$?
            BENCH_PID=""
            echo "$rc" >"$dir/bench.rc"
            stop_pid "$SERVER_PID"
            SERVER_PID=""
            if [[ $KEEP_DATA != 1 ]]; then
                # Keep the configuration, drop the databases.
                for c in homeserver.yaml log.yaml; do
                    [[ -f $dir/data/$c ]] && cp "$dir/data/$c" "$dir/$c"
                done
                rm -rf "$dir/data"
            fi
            summary=$(grep -E '^(sends|delivery):' "$dir/bench.out" | tr '\n' ' ' || true)
            if ((rc != 0)); then
                failures=$((failures + 1))
                log "$label: tern-bench exit $rc: $summary"
                grep -iE '^(error|!!!)' "$dir/bench.out" | head -n 5 | sed 's/^/    /' >&2 || true
            else
                log "$label: ok: $summary"
            fi
        done
    done
done

# ---------------------------------------------------------------- report
"$PYTHON" "$HERE/summarize.py" "$OUT" | tee "$OUT/summary.md"
log "raw JSON, logs and summary.md: $OUT"
if ((failures > 0)); then
    log "$failures run(s) had tern-bench exit non-zero (lost/duplicated deliveries or errors); see the table and each run's bench.out"
    exit 1
fi
