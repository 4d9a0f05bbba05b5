#!/usr/bin/env bash
# Fuzzes the running embedded server against its own OpenAPI document with schemathesis
# (pinned, in the project-local virtualenv .venv-schemathesis): every operation, with
# generated valid and invalid requests, must answer no 5xx, a status the document lists,
# its content type and a body of its schema. Deterministic (the same cases every run), so
# a failure here is a finding, not noise. Part of scripts/test.sh.
#
#   bash scripts/schemathesis.sh            # builds `nearcast` if needed, serves, fuzzes
#   EXAMPLES=500 bash scripts/schemathesis.sh   # deeper
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nearcast-target}"
VENV=.venv-schemathesis
REQUIREMENTS=scripts/requirements-schemathesis.txt
STAMP="$VENV/.installed-$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
    echo "schemathesis.sh: installing $(grep -i '^schemathesis==' "$REQUIREMENTS") into $VENV" >&2
    python3 -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    touch "$STAMP"
fi
cargo build --release --locked -q -p nearcast
work="$(mktemp -d -t nearcast-schemathesis.XXXXXX)"
port="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$CARGO_TARGET_DIR/release/nearcast" serve --addr "127.0.0.1:$port" --db "$work/nearcast.db" \
    --outbox "$work/outbox.jsonl" --config events --weather events/weather.json \
    >"$work/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
status=0
"$VENV/bin/schemathesis" run "http://127.0.0.1:$port/v1/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "${EXAMPLES:-100}" --generation-deterministic --workers 2 --no-color \
    >"$work/schemathesis.log" 2>&1 || status=$?
if [ "$status" != 0 ] || grep -q "panicked" "$work/serve.log"; then
    cat "$work/schemathesis.log"
    echo "--- server log" && tail -50 "$work/serve.log"
    echo "schemathesis: FAILED" >&2
    exit 1
fi
grep -E "generated|passed|failures" "$work/schemathesis.log" | tail -3
echo "schemathesis: ok"
