#!/usr/bin/env bash
# Cold start of the deciding functions under a local Lambda Runtime API, beside a hello-world
# lambda_runtime function built the same way, each pinned to one core.
#
#   bench/coldstart/run.sh                          # 10,000 stores, 1,000 offers, 11 runs each
#   STORES=100000 OFFERS=10000 bench/coldstart/run.sh
#
# Builds (release profile, CARGO_TARGET_DIR honoured; BUILD=0 skips) the events-api and
# events-queue functions as host binaries, the hello-world function (bench/coldstart/hello),
# nearcast and nearcast-loadgen. Starts moto's server (scripts/moto.sh), generates STORES
# stores and OFFERS offers (`nearcast-loadgen gen-config`), saves them into a fresh DynamoDB
# table through `nearcast serve --backend aws --config` (the admin path, which also writes the
# catalog snapshot when NEARCAST_CATALOG_BUCKET is set), then runs bench/coldstart/runtime_api.py
# for each binary: init (process start to the first `invocation/next`) in wall and CPU time, and
# the first invocation (a `POST /v1/events` of events/lambda/apigw-v2-post-events.json for
# events-api). The functions read the shipped model (models/ranker.json, bundled).
#
# SNAPSHOT=0 runs the functions without the catalog bucket, so they rebuild the catalog from
# the table as before snapshots existed; SNAPSHOT=both (default) runs both ways.
# Knobs: STORES, OFFERS, RUNS, CPU (the core to pin to, default 1), BUILD, SNAPSHOT.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
STORES="${STORES:-10000}"
OFFERS="${OFFERS:-1000}"
RUNS="${RUNS:-11}"
CPU="${CPU:-1}"
SNAPSHOT="${SNAPSHOT:-both}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"

say() { echo "coldstart: $*" >&2; }

if [ -z "${NEARCAST_MOTO:-}" ]; then
    if [ "${BUILD:-1}" != 0 ]; then
        say "building"
        cargo build --release --locked -p nearcast-events-api -p nearcast-events-queue \
            -p nearcast-coldstart-hello -p nearcast -p nearcast-loadgen >&2
    fi
    exec bash scripts/moto.sh bash "$0" "$@"
fi

WORK="$(mktemp -d)"
SERVER=""
cleanup() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

TABLE="coldstart-$$"
BUCKET="coldstart-$$"
export NEARCAST_TABLE="$TABLE"
"$BIN/nearcast-loadgen" gen-config --stores "$STORES" --offers "$OFFERS" --out "$WORK/config" >&2
say "saving $STORES stores and $OFFERS offers into table $TABLE"
started=$(date +%s)
"$BIN/nearcast" serve --backend aws --table "$TABLE" --create-table --config "$WORK/config" \
    --catalog-bucket "$BUCKET" --create-bucket --addr 127.0.0.1:0 >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER=$!
for _ in $(seq 1 1800); do
    if [ -s "$WORK/serve.out" ]; then break; fi
    if ! kill -0 "$SERVER" 2>/dev/null; then cat "$WORK/serve.err" >&2; exit 1; fi
    sleep 1
done
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=""
say "saved in $(( $(date +%s) - started )) s"

run() {
    local label="$1"; shift
    python3 bench/coldstart/runtime_api.py --runs "$RUNS" --cpu "$CPU" --label "$label" "$@"
}
run hello -- "$BIN/nearcast-coldstart-hello"
if [ "$SNAPSHOT" != 0 ]; then
    NEARCAST_CATALOG_BUCKET="$BUCKET" run "events-api, snapshot" \
        --event events/lambda/apigw-v2-post-events.json -- "$BIN/nearcast-events-api"
    NEARCAST_CATALOG_BUCKET="$BUCKET" run "events-queue, snapshot" \
        --event events/lambda/sqs-events.json -- "$BIN/nearcast-events-queue"
fi
if [ "$SNAPSHOT" != 1 ]; then
    run "events-api, from the table" \
        --event events/lambda/apigw-v2-post-events.json -- "$BIN/nearcast-events-api"
    run "events-queue, from the table" \
        --event events/lambda/sqs-events.json -- "$BIN/nearcast-events-queue"
fi
