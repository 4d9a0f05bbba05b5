#!/usr/bin/env bash
# Load test of `nearcast serve` on loopback: builds the release binaries, generates a
# 10,000-store / 1,000-offer configuration, starts the server on a fresh database, measures
# its memory after start-up, drives POST /v1/events with a few connection counts, measures
# memory again and prints a summary. See bench/README.md.
#
# Knobs (environment):
#   STORES=10000 OFFERS=1000      configuration size
#   CONNECTIONS="4 16 64"         one load run per connection count, in this order
#   DURATION=20                   seconds of load per run
#   USERS=2000 BATCH=50           distinct users, location events per request
#   MAX_EVENTS=2000000            event bound per run
#   SYNC=normal                   nearcast serve --sync (normal | full)
#   DB_PARENT=$TMPDIR or /tmp     where the database goes (e.g. /dev/shm to take the disk out)
#   STARTUP_TIMEOUT=300           seconds to wait for the server's "listening" line
#   BUILD=1                       0 skips `cargo build`
#   JSON_OUT=                     file to append each run's JSON line to
#   LOADGEN_ARGS=                 extra `nearcast-loadgen run` options (e.g. "--scatter",
#                                 "--fix-interval 5")
#   SERVER_BIN=, LOADGEN_BIN=     binaries to use instead of the built ones (e.g. an earlier
#                                 commit's server, for a side-by-side comparison)
#   QUIET=1                       0 writes a policy.json without quiet hours (default caps
#                                 otherwise), so the send path is loaded at any hour; with 1
#                                 the default policy's 21:00-08:00 (Helsinki) sends nothing
#                                 at night
#   KEEP_DB=                      non-empty keeps the database folder (its path is printed)
#   CAMPAIGNS=0                   1 defines every campaign the offers name (active, 10 %
#                                 holdout), so sends and holdouts move the results' cells and
#                                 each person's exposures in every commit
set -euo pipefail

STORES=${STORES:-10000}
OFFERS=${OFFERS:-1000}
CONNECTIONS=${CONNECTIONS:-"4 16 64"}
DURATION=${DURATION:-20}
USERS=${USERS:-2000}
BATCH=${BATCH:-50}
MAX_EVENTS=${MAX_EVENTS:-2000000}
SYNC=${SYNC:-normal}
DB_PARENT=${DB_PARENT:-${TMPDIR:-/tmp}}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-300}
BUILD=${BUILD:-1}
JSON_OUT=${JSON_OUT:-}
QUIET=${QUIET:-1}
CAMPAIGNS=${CAMPAIGNS:-0}
KEEP_DB=${KEEP_DB:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf '[serve_load] %s\n' "$*" >&2; }

if [[ "$BUILD" == 1 ]]; then
    log "building release binaries (nearcast, nearcast-loadgen)"
    timeout 3600 cargo build --release --quiet -p nearcast -p nearcast-loadgen
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN="$TARGET_DIR/release"
SERVER_BIN=${SERVER_BIN:-$BIN/nearcast}
LOADGEN_BIN=${LOADGEN_BIN:-$BIN/nearcast-loadgen}
for b in "$SERVER_BIN" "$LOADGEN_BIN"; do
    [[ -x "$b" ]] || { log "missing $b (run with BUILD=1)"; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/serve_load.XXXXXX")
DBDIR=$(mktemp -d "$DB_PARENT/serve_load-db.XXXXXX")
SERVER_PID=

cleanup() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -INT "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "$KEEP_DB" ]]; then
        echo "[serve_load] database kept in $DBDIR" >&2
        rm -rf "$WORK"
    else
        rm -rf "$WORK" "$DBDIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# VmRSS and VmHWM of the server, in KiB: "rss hwm".
mem() { awk '/^VmRSS:/ {r=$2} /^VmHWM:/ {h=$2} END {print r, h}' "/proc/$SERVER_PID/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
# A numeric field of a flat JSON line.
field() { grep -o "\"$1\":[^,}]*" <<<"$2" | head -n1 | cut -d: -f2 || true; }

# Cores kept busy by other processes over one second (the runs report it too, as "others").
idle_check() {
    local a b
    a=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {split(a, x, " "); split(b, y, " "); printf "%.2f", (y[1] - x[1]) / 100}'
}
BUSY=$(idle_check)
if awk -v b="$BUSY" 'BEGIN {exit !(b > 0.3)}'; then
    log "warning: other processes keep ~$BUSY cores busy; throughput will be lower than on an idle machine"
fi

log "generating $STORES stores and $OFFERS offers"
timeout 300 "$LOADGEN_BIN" gen-config --stores "$STORES" --offers "$OFFERS" --out "$WORK/config" >&2
if [[ "$QUIET" == 0 ]]; then
    printf '%s\n' '{"per_day": 2, "per_week": 6, "min_gap_minutes": 60, "quiet_start": "00:00", "quiet_end": "00:00"}' \
        >"$WORK/config/policy.json"
    log "policy without quiet hours (default caps)"
fi
if [[ "$CAMPAIGNS" == 1 ]]; then
    python3 - "$WORK/config" <<'PY'
import json, sys
d = sys.argv[1]
ids = sorted({o["campaign_id"] for o in json.load(open(f"{d}/offers.json"))})
json.dump([{"id": c, "name": f"Campaign {c}", "status": "active", "holdout": 0.1,
            "conversion": {"event": "visit", "within_hours": 72}} for c in ids],
          open(f"{d}/campaigns.json", "w"))
print(f"{len(ids)} campaigns defined", file=sys.stderr)
PY
    log "campaigns defined (results cells in every commit)"
fi

log "starting nearcast serve (database in $DBDIR, --sync $SYNC)"
: >"$WORK/server.out" # created here: the background job opens its redirections only once it runs
t0=$(date +%s.%N)
"$SERVER_BIN" serve --addr 127.0.0.1:0 --db "$DBDIR/nearcast.db" --outbox "$DBDIR/outbox.jsonl" \
    --config "$WORK/config" --sync "$SYNC" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
PORT=
deadline=$((SECONDS + STARTUP_TIMEOUT))
while [[ -z "$PORT" ]]; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "server exited during start-up:"; cat "$WORK/server.err" >&2; exit 1
    fi
    if ((SECONDS >= deadline)); then
        log "server not listening after ${STARTUP_TIMEOUT}s"; exit 1
    fi
    PORT=$(sed -n '1s#^nearcast listening on http://127\.0\.0\.1:\([0-9]*\)$#\1#p' "$WORK/server.out")
    [[ -n "$PORT" ]] || sleep 0.05
done
t1=$(date +%s.%N)
STARTUP_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
read -r RSS0 HWM0 < <(mem)
log "listening on 127.0.0.1:$PORT after ${STARTUP_S}s; VmRSS $(mib "$RSS0") MiB, VmHWM $(mib "$HWM0") MiB"

ROWS=()
FAILED=0
first=1
for C in $CONNECTIONS; do
    warm=()
    ((first)) || warm=(--no-warmup)
    first=0
    log "load: $C connections, ${DURATION}s, $USERS users, batch $BATCH"
    rc=0
    timeout $((DURATION * 3 + 300)) "$LOADGEN_BIN" run --addr "127.0.0.1:$PORT" --connections "$C" \
        --users "$USERS" --batch "$BATCH" --duration "$DURATION" --max-events "$MAX_EVENTS" \
        --server-pid "$SERVER_PID" --json "${warm[@]}" ${LOADGEN_ARGS:-} >"$WORK/run-$C.json" 2>"$WORK/run-$C.txt" || rc=$?
    sed 's/^/    /' "$WORK/run-$C.txt" >&2
    line=$(tail -n1 "$WORK/run-$C.json")
    [[ -n "$JSON_OUT" && -n "$line" ]] && printf '%s\n' "$line" >>"$JSON_OUT"
    if ((rc != 0)) || [[ -z "$line" ]]; then
        log "run with $C connections failed (exit $rc)"; FAILED=1
    fi
    read -r rss hwm < <(mem)
    ROWS+=("$(printf '%6s %9s %8s %8s %8s %8s %8s %7s %7s %9s %11s %7s %7s %8s %8s' "$C" \
        "$(field events_per_s "$line")" "$(field requests_per_s "$line")" "$(field p50_ms "$line")" \
        "$(field p90_ms "$line")" "$(field p99_ms "$line")" "$(field max_ms "$line")" "$(field errors "$line")" \
        "$(field server_cores "$line")" "$(field server_cpu_us_per_event "$line")" \
        "$(field server_disk_kib_per_event "$line")" "$(field other_busy_cores "$line")" "$(field stolen_cores "$line")" \
        "$(mib "$rss")" "$(mib "$hwm")")")
done

read -r RSS1 HWM1 < <(mem)
DB_BYTES=$(du -cb "$DBDIR"/nearcast.db* 2>/dev/null | tail -n1 | cut -f1)
PUSHES=$(wc -l <"$DBDIR/outbox.jsonl" 2>/dev/null || echo 0)

cat <<EOF

nearcast serve load test: $STORES stores, $OFFERS offers, $USERS users, batch $BATCH, ${DURATION}s per run, --sync $SYNC${LOADGEN_ARGS:+, loadgen $LOADGEN_ARGS}
machine: $(nproc) cores (~$BUSY busy with other processes before the runs), database in $DB_PARENT; server and driver share the cores
start-up: listening after ${STARTUP_S}s; VmRSS $(mib "$RSS0") MiB, VmHWM $(mib "$HWM0") MiB
 conns  events/s    req/s   p50 ms   p90 ms   p99 ms   max ms  errors srv cpu srv us/ev disk KiB/ev  others  stolen  RSS MiB  HWM MiB
EOF
printf '%s\n' "${ROWS[@]}"
cat <<EOF
after load: VmRSS $(mib "$RSS1") MiB, VmHWM $(mib "$HWM1") MiB; database $(mib $((DB_BYTES / 1024))) MiB; $PUSHES pushes in the outbox
(srv cpu: server CPU cores used; srv us/ev: server CPU per event; disk KiB/ev: bytes the server sent to storage
 per event; others: cores busy with other processes during the run; stolen: cores the hypervisor gave
 to other guests during the run, which this machine could not use)
EOF
exit "$FAILED"
