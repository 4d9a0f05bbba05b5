#!/usr/bin/env bash
# Cold start of the deciding functions under a local Lambda Runtime API, beside a hello-world
# lambda_runtime function built the same way, each pinned to one core.
#
#   bench/coldstart/run.sh                          # 10,000 stores, 1,000 offers, 11 runs each
#   STORES=100000 OFFERS=10000 bench/coldstart/run.sh
#
# Builds (release profile, CARGO_TARGET_DIR honoured; BUILD=0 skips) the events-api and
# events-queue functions as host binaries, the hello-world function (bench/coldstart/hello),
# nearcast-loadgen and nearcast-coldstart-setup. Starts moto's server (scripts/moto.sh),
# generates STORES stores and OFFERS offers (`nearcast-loadgen gen-config`), publishes their
# catalog as admin-api does after a change (bench/coldstart/setup: the snapshot in S3, the
# change's audit entry and the pointer in DynamoDB), then runs bench/coldstart/runtime_api.py
# for each binary with NEARCAST_CATALOG_BUCKET set: init (process start to the first
# `invocation/next`) in wall and CPU time, and the first invocation (a `POST /v1/events` of
# events/lambda/apigw-v2-post-events.json for events-api, an SQS batch for events-queue). The
# functions read the shipped model (models/ranker.json, bundled). Each function logs the
# stores it started with (NEARCAST_COLDSTART_LOGS=1 shows the logs).
# Knobs: STORES, OFFERS, RUNS, CPU (the core to pin to, default 1), BUILD.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
STORES="${STORES:-10000}"
OFFERS="${OFFERS:-1000}"
RUNS="${RUNS:-11}"
CPU="${CPU:-1}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"

say() { echo "coldstart: $*" >&2; }

if [ -z "${NEARCAST_MOTO:-}" ]; then
    if [ "${BUILD:-1}" != 0 ]; then
        say "building"
        cargo build --release --locked -p nearcast-events-api -p nearcast-events-queue \
            -p nearcast-coldstart-hello -p nearcast-coldstart-setup -p nearcast-loadgen >&2
    fi
    exec bash scripts/moto.sh bash "$0" "$@"
fi

WORK="$(mktemp -d)"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# As infra/template.yaml sets it for the functions.
export MIMALLOC_PURGE_DELAY=0
TABLE="coldstart-$$"
BUCKET="coldstart-$$"
export NEARCAST_TABLE="$TABLE"
"$BIN/nearcast-loadgen" gen-config --stores "$STORES" --offers "$OFFERS" --out "$WORK/config" >&2
say "publishing the catalog of $STORES stores and $OFFERS offers (table and bucket $TABLE)"
"$BIN/nearcast-coldstart-setup" "$WORK/config" "$TABLE" "$BUCKET" >&2

run() {
    local label="$1"; shift
    python3 bench/coldstart/runtime_api.py --runs "$RUNS" --cpu "$CPU" --label "$label" "$@"
}
run hello -- "$BIN/nearcast-coldstart-hello"
NEARCAST_CATALOG_BUCKET="$BUCKET" run "events-api" \
    --event events/lambda/apigw-v2-post-events.json -- "$BIN/nearcast-events-api"
NEARCAST_CATALOG_BUCKET="$BUCKET" run "events-queue" \
    --event events/lambda/sqs-events.json -- "$BIN/nearcast-events-queue"
