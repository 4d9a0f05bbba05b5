#!/usr/bin/env bash
# Runs every test of the workspace: unit and property tests, the invariants, the API's
# handling of bad input, the demo, the kill -9 durability test, and the AWS adapters
# against moto's server on loopback.
# One profile (release) for tests, the demo and the benchmarks, so dependencies build once.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nearcast-target}"
log="$(mktemp -t nearcast-test.XXXXXX)"
trap 'rm -f "$log"' EXIT
# moto's server (pinned, in .venv) on loopback for the DynamoDB and SNS tests; see scripts/moto.sh.
status=0
bash scripts/moto.sh cargo test --workspace --release --locked "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6; s += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
