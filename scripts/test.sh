#!/usr/bin/env bash
# Runs every test of the workspace: unit and property tests, the invariants, the API's
# handling of bad input, the demo, and the kill -9 durability test.
# One profile (release) for tests, the demo and the benchmarks, so dependencies build once.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nearcast-target}"
# moto's server (pinned, in .venv) on loopback for the DynamoDB tests; see scripts/moto.sh.
bash scripts/moto.sh cargo test --workspace --release --locked "$@"
