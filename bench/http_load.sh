#!/usr/bin/env bash
# HTTP load benchmark of `omm serve` (issue 5 speed targets), on this machine.
#
#   bench/http_load.sh [N ...]        # default N = 1000000; e.g. `bench/http_load.sh 1000000 10000000`
#
# For each N: seeds (once, kept in $OMM_BENCH_DIR/n<N>) a SQLite data directory with N random PDQ
# hashes through the store's bulk path (crates/omm-server/examples/seed_pdq.rs), starts the
# release `omm serve` on it, waits for /status 200 and measures with wrk (HTTP/1.1 keep-alive):
#   1. baseline: GET /status/live, concurrency $CONCURRENCY
#   2. GET /m/raw_lookup?signal_type=pdq&signal=<hash>, concurrency $CONCURRENCY, hashes taken in
#      turn from a list (half near-matches of banked hashes, half misses)
#   3. POST /m/lookup with a 1024x768 JPEG (multipart field `photo`), concurrency 8
#   4. VmRSS/VmHWM of the server after loading and after the load
#   5. graceful stop (final snapshot) and a restart from the snapshot (time to ready, VmRSS)
# Server and wrk CPU seconds are reported for every run (they share the machine's cores).
#
# Environment: OMM_BENCH_DIR (default $TMPDIR/omm-http-bench), DURATION (s, default 30),
# CONCURRENCY (default 64), PHOTO_CONCURRENCY (default 8), WRK_THREADS (default 1), PORT
# (default 5199), OMM_VECTORS_DIR (default ../shared/vectors), CARGO_TARGET_DIR.
# Installs wrk, jpegtran (libjpeg-turbo-progs), curl and bc with apt-get if they are missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="${OMM_BENCH_DIR:-${TMPDIR:-/tmp}/omm-http-bench}"
DURATION="${DURATION:-30}"
CONCURRENCY="${CONCURRENCY:-64}"
PHOTO_CONCURRENCY="${PHOTO_CONCURRENCY:-8}"
WRK_THREADS="${WRK_THREADS:-1}"
PORT="${PORT:-5199}"
VECTORS="${OMM_VECTORS_DIR:-$ROOT/../shared/vectors}"
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1000000)
BASE="http://127.0.0.1:$PORT"
TICKS="$(getconf CLK_TCK)"
export OMM_BENCH_LUA_DIR="$BENCH"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

install_tools() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v jpegtran >/dev/null || missing+=(libjpeg-turbo-progs)
  command -v curl >/dev/null || missing+=(curl)
  command -v bc >/dev/null || missing+=(bc)
  if [ ${#missing[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    log "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# CPU seconds (user+system) used so far by process $1.
cpu_seconds() {
  awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"
}

mem() { # VmRSS and VmHWM of process $1, in MiB
  awk '/^VmRSS|^VmHWM/ { printf "%s %.0f MiB  ", $1, $2 / 1024 }' "/proc/$1/status"
}

wait_ready() { # pid; prints seconds until /status is 200
  local pid=$1 t0
  t0=$(date +%s.%N)
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/status" || true)" = 200 ]; do
    kill -0 "$pid" 2>/dev/null || { log "server exited"; return 1; }
    sleep 0.2
  done
  echo "$(date +%s.%N) - $t0" | bc
}

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    local t0
    t0=$(date +%s.%N)
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
    echo "graceful stop (final snapshot): $(echo "$(date +%s.%N) - $t0" | bc | xargs printf '%.2f') s"
  fi
  SERVER_PID=""
}
trap stop_server EXIT

start_server() { # data dir, log file
  "$CARGO_TARGET_DIR/release/omm" serve --data-dir "$1" --listen "127.0.0.1:$PORT" \
    --no-background-tasks --production >"$2" 2>&1 &
  SERVER_PID=$!
}

# One wrk run against the server: label, concurrency, script, path.
run_wrk() {
  local label=$1 conc=$2 script=$3 path=$4 s0 s1 out tf
  out="$WORK/wrk-$label.txt"
  tf="$WORK/wrk-$label.time"
  s0=$(cpu_seconds "$SERVER_PID")
  TIMEFORMAT='%U %S'
  { time wrk -t"$WRK_THREADS" -c"$conc" -d"${DURATION}s" --timeout 10s --latency \
      -s "$BENCH/$script" "$BASE$path" >"$out"; } 2>"$tf"
  s1=$(cpu_seconds "$SERVER_PID")
  local wrk_cpu server_cpu
  wrk_cpu=$(awk '{ printf "%.1f", $1 + $2 }' "$tf")
  server_cpu=$(echo "$s1 - $s0" | bc)
  echo "$label: $(grep '^RESULT' "$out" | cut -d' ' -f2-) server_cpu_s=$server_cpu wrk_cpu_s=$wrk_cpu load=\"$(cut -d' ' -f1-3 /proc/loadavg)\""
}

install_tools
log "building release omm and the seeding example"
cargo build --release -j 2 -p omm --bin omm
cargo build --release -j 2 -p omm-server --example seed_pdq
mkdir -p "$WORK"

PHOTO="$WORK/photo-1024x768.jpg"
if [ ! -s "$PHOTO" ]; then
  # A lossless 1024x768 centre crop (MCU-aligned) of a 1600x1004 vector photo.
  jpegtran -crop 1024x768+288+112 -copy none -outfile "$PHOTO" \
    "$VECTORS/threatexchange/pdq/data/bridge-mods/aaa-orig.jpg"
fi
export OMM_BENCH_PHOTO="$PHOTO"

echo "# omm http_load $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), wrk threads $WRK_THREADS, ${DURATION}s per run"
echo "# photo: $PHOTO ($(stat -c %s "$PHOTO") bytes)"
for N in "${SIZES[@]}"; do
  DATA="$WORK/n$N"
  QUERIES="$WORK/queries-$N.txt"
  export OMM_BENCH_QUERIES="$QUERIES"
  if [ ! -f "$DATA/seeded" ] || [ ! -s "$QUERIES" ]; then
    rm -rf "$DATA"
    log "seeding $N PDQ hashes into $DATA"
    "$CARGO_TARGET_DIR/release/examples/seed_pdq" "$DATA" "$N" "$QUERIES" 20000
    touch "$DATA/seeded"
  fi
  echo "## N = $N"
  # The first start reads everything from the database; the restart below uses the snapshot.
  rm -rf "$DATA/matcher-snapshot"
  log "starting omm serve on $DATA"
  start_server "$DATA" "$WORK/serve-$N.log"
  ready=$(wait_ready "$SERVER_PID")
  echo "ready (from the database) after $(printf '%.1f' "$ready") s; $(mem "$SERVER_PID")(index status: $(curl -s "$BASE/m/index/status?signal_type=pdq"))"

  # The photo is banked once, so that every photo lookup also returns a match.
  curl -s -o /dev/null -X POST "$BASE/c/banks" -H 'content-type: application/json' -d '{"name":"BENCH_PHOTOS"}' || true
  if ! curl -s -X POST "$BASE/m/lookup" -F "photo=@$PHOTO" | grep -q BENCH_PHOTOS; then
    curl -s -o /dev/null -X POST "$BASE/c/bank/BENCH_PHOTOS/content" -F "photo=@$PHOTO"
    sleep 1
  fi
  echo "sample raw_lookup: $(curl -s "$BASE/m/raw_lookup?signal_type=pdq&signal=$(head -1 "$QUERIES")&include_distance=true" | head -c 200)"
  echo "sample photo lookup: $(curl -s -X POST "$BASE/m/lookup" -F "photo=@$PHOTO" | head -c 200)"

  run_wrk "live-$N" "$CONCURRENCY" plain.lua /status/live
  run_wrk "raw-$N" "$CONCURRENCY" raw_lookup.lua /m/raw_lookup
  run_wrk "photo-$N" "$PHOTO_CONCURRENCY" photo_lookup.lua /m/lookup
  echo "after load: $(mem "$SERVER_PID")"
  stop_server

  start_server "$DATA" "$WORK/serve-$N-restart.log"
  ready=$(wait_ready "$SERVER_PID")
  echo "restart from snapshot: ready after $(printf '%.1f' "$ready") s; $(mem "$SERVER_PID")"
  stop_server
done
