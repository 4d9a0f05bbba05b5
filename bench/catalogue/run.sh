#!/usr/bin/env bash
# The catalogue benchmark: Nearcast's hashed-feature model against scikit-learn's plain
# logistic regression (one-hot context, H3 cells and history), on a generated visit log of
# a retailer whose categories, places and hours have known effects (generate.py).
#
#   bash bench/catalogue/run.sh [DECISIONS] [SEED]     # default 60000 decisions, seed 7
#
# Installs the pinned requirements into the project's .venv, generates the log, trains
# with `--label purchased --test-from` (the last week is the test set for both models),
# evaluates on the test week with `nearcast-train evaluate --json`, fits the reference on
# the same training decisions and prints both side by side. Not part of the tests.
set -euo pipefail
cd "$(dirname "$0")/../.."

DECISIONS="${1:-60000}"
SEED="${2:-7}"
VENV=.venv
REQUIREMENTS=bench/catalogue/requirements.txt
STAMP="$VENV/.catalogue-$(cat "$REQUIREMENTS" bench/sklearn/requirements.txt | sha256sum | cut -c1-16)"
WORK="${BENCH_DIR:-models/data/bench-catalogue}"
TEST_FROM="2026-11-02T00:00:00Z"   # generate.py's 42 days start 2026-09-28: the last week tests

if [ ! -f "$STAMP" ]; then
    echo "run.sh: installing the benchmark's requirements into $VENV" >&2
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    (cd bench/catalogue && "../../$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt)
    touch "$STAMP"
fi

cargo build --release --locked -p nearcast-train
TRAIN="${CARGO_TARGET_DIR:-target}/release/nearcast-train"
mkdir -p "$WORK"
"$VENV/bin/python" bench/catalogue/generate.py --seed "$SEED" --decisions "$DECISIONS" --out "$WORK/data.jsonl"
# The test week alone, for `evaluate`.
"$VENV/bin/python" - "$WORK/data.jsonl" "$TEST_FROM" > "$WORK/test.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if json.loads(line)["at"] >= sys.argv[2]:
        sys.stdout.write(line)
PY
"$TRAIN" train --data "$WORK/data.jsonl" --label purchased --test-from "$TEST_FROM" \
    --out "$WORK/model.json" --version bench-catalogue "${@:3}" > "$WORK/train.txt"
"$TRAIN" evaluate "$WORK/model.json" --data "$WORK/test.jsonl" --label purchased --json > "$WORK/nearcast.json"
"$VENV/bin/python" bench/catalogue/sklearn_reference.py "$WORK/data.jsonl" "$TEST_FROM" "$WORK/nearcast.json"
