#!/usr/bin/env bash
# Training time and AUC of linfa's and scikit-learn's logistic regression on the same rows.
#
#   bash bench/sklearn/run.sh [DECISIONS]      # default 460000 decisions, about 1 million rows
#
# Installs the pinned scikit-learn (bench/sklearn/requirements.txt) into the project's .venv
# (the one scripts/moto.sh creates; moto's packages are left as they are), generates seeded
# data in the nearcast-training/1 format, lets `nearcast-train bench-logistic` split it by
# time, export the train and test design matrices (features from features::encode) and fit
# linfa on them with each solver (L-BFGS, FTRL), then fits scikit-learn on the exported
# matrices, raw and standardized. One JSON line per fit. Not part of the tests.
set -euo pipefail
cd "$(dirname "$0")/../.."

DECISIONS="${1:-460000}"
VENV=.venv
REQUIREMENTS=bench/sklearn/requirements.txt
STAMP="$VENV/.sklearn-$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
WORK="${BENCH_DIR:-models/data/bench-sklearn}"
ALPHA="${ALPHA:-5}"

if [ ! -f "$STAMP" ]; then
    echo "run.sh: installing scikit-learn into $VENV" >&2
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    touch "$STAMP"
fi

cargo build --release --locked -p nearcast-train
TRAIN="${CARGO_TARGET_DIR:-target}/release/nearcast-train"
mkdir -p "$WORK"
"$TRAIN" generate --seed 7 --decisions "$DECISIONS" --out "$WORK/data.jsonl"
for solver in lbfgs ftrl; do
    "$TRAIN" bench-logistic --data "$WORK/data.jsonl" --export-dir "$WORK" --alpha "$ALPHA" \
        --solver "$solver" "${@:2}"
done
"$VENV/bin/python" bench/sklearn/sklearn_logistic.py "$WORK" "$ALPHA"
