#!/usr/bin/env bash
# Runs every test of the workspace: unit and property tests, the invariants, the API's
# handling of bad input, the demo, the kill -9 durability test, and the AWS adapters
# against moto's server on loopback; then the API against its OpenAPI document, the
# marketer console in a headless browser; beside those, builds the Lambda zips and runs sam
# build. One profile (release) for tests, the demo and the benchmarks, so dependencies build
# once (the test-only crate tests/ at opt-level 1, see Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/nearcast-target}"
log="$(mktemp -t nearcast-test.XXXXXX)"
trap 'rm -f "$log"' EXIT
# moto (pinned, in .venv) for the DynamoDB and SNS tests: installed here once; each test
# binary that needs it then starts a server of its own on loopback (nearcast_aws::moto), so
# no binary waits on state the others left behind (one server shared by the whole run grew
# to gigabytes, and reading its record of SNS messages took minutes).
bash scripts/moto.sh --python >/dev/null
# Each phase says how long it took (docs/testing.md keeps CI's budget).
phase_start=$SECONDS
phase() { echo "test.sh: $1 took $((SECONDS - phase_start)) s" >&2; phase_start=$SECONDS; }
status=0
# Everything compiled first (a compile error stops here), so that the Lambda build below
# never competes with this one.
cargo test --workspace --release --locked --no-run "$@" 2>&1 | tee "$log" || exit 1
phase "compiling the tests"
# What AWS runs: the three functions built as arm64 Lambda zips with cargo-lambda, and
# infra/template.yaml through `sam validate --lint` and `sam build` (pinned tools in
# .venv-lambda, builds cached in ~/.cache/nearcast-lambda-target; see the script). It runs
# beside the tests, at the lowest priority: the tests mostly wait on moto's server (one
# Python process), so the cross-build takes the core they leave, and CI's time is the
# longer of the two instead of their sum. Its output is shown once it ends.
# NEARCAST_SKIP_LAMBDA_BUILD=1 leaves it out of a quick local run; CI never sets it.
lambda_status=skipped
lambda_pid=
lambda_log="$(mktemp -t nearcast-lambda.XXXXXX)"
# Its own process group (setsid), so that leaving early stops cargo and zig with it.
LANES=
trap 'rm -rf "$log" "$lambda_log" $LANES; [ -z "$lambda_pid" ] || kill -- "-$lambda_pid" 2>/dev/null || true' EXIT
if [ "${NEARCAST_SKIP_LAMBDA_BUILD:-0}" != 1 ]; then
    lambda_status=ok
    setsid nice -n 19 bash scripts/build-lambdas.sh >"$lambda_log" 2>&1 &
    lambda_pid=$!
fi
# The tests, two test binaries at a time: most of the time goes to tests/'s binaries that
# drive moto (a Python process each, so one core each at most), and one at a time left a core
# idle. The longest first (times of CI's runs; binaries not listed go after), so neither half
# waits long on the other at the end; the rest of the workspace (its crates' unit, property
# and integration tests, doc tests) is one item. Each binary's output is printed whole when
# it ends. Any arguments (`scripts/test.sh -- some_filter`) mean one plain `cargo test
# --workspace` instead.
LONGEST_FIRST=(aws_e2e disorder campaigns store_import invariants @rest aws_cost store_contract privacy)
run_item() {
    local item=$1 out="$LANES/$1.log" rc=0 start=$SECONDS
    if [ "$item" = @rest ]; then
        { cargo test --workspace --exclude nearcast-tests --release --locked --no-fail-fast || rc=$?
          cargo test -p nearcast-tests --lib --release --locked || rc=$?
          cargo test -p nearcast-tests --doc --release --locked || rc=$?; } >"$out" 2>&1
    else
        cargo test -p nearcast-tests --test "$item" --release --locked >"$out" 2>&1 || rc=$?
    fi
    {
        flock 9
        cat "$out"
        echo "test.sh: $item took $((SECONDS - start)) s$([ "$rc" = 0 ] || echo ", FAILED")" >&2
    } 9>"$LANES/.print"
    touch "$LANES/$item.done"
    # xargs stops at an exit status of 255; any failure is 1 here.
    [ "$rc" = 0 ]
}
if [ $# -gt 0 ] || ! command -v flock >/dev/null; then
    cargo test --workspace --release --locked "$@" 2>&1 | tee -a "$log" || status=$?
else
    LANES="$(mktemp -d -t nearcast-lanes.XXXXXX)"
    export LANES
    export -f run_item
    # tests/'s test targets as cargo knows them (not a glob of files, so that none declared
    # another way is left out), the listed ones first in their order.
    mapfile -t targets < <(cargo metadata --no-deps --format-version 1 --locked --offline |
        python3 -c 'import json, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "nearcast-tests":
        print("\n".join(sorted(t["name"] for t in p["targets"] if "test" in t["kind"])))')
    [ "${#targets[@]}" -gt 0 ] || { echo "test.sh: no test target found in tests/" >&2; exit 1; }
    items=()
    for t in "${LONGEST_FIRST[@]}"; do
        [ "$t" = @rest ] || [[ " ${targets[*]} " == *" $t "* ]] && items+=("$t")
    done
    for t in "${targets[@]}"; do
        [[ " ${items[*]} " == *" $t "* ]] || items+=("$t")
    done
    printf '%s\n' "${items[@]}" | xargs -P 2 -I{} bash -c 'run_item "$1"' _ {} || status=1
    # Every item ran to its end and printed its time (xargs gives up on none, but a lane
    # killed from outside would leave its item's log without the time line).
    for t in "${items[@]}"; do
        [ -f "$LANES/$t.done" ] || { echo "test.sh: $t never finished" >&2; status=1; }
    done
    cat "$LANES"/*.log >>"$log"
fi
phase "running the tests"
# The running server against its own OpenAPI document: schemathesis (pinned, in
# .venv-schemathesis), deterministic, every operation; no 5xx, nothing outside the document.
api_status=ok
bash scripts/schemathesis.sh || { api_status=FAILED; status=1; }
phase "schemathesis"
# The marketer console in a real browser: Debian's chromium (installed when missing)
# driven by playwright-core (pinned in crates/nearcast-console's lockfile) through the
# marketer's scenario; screenshots in $CARGO_TARGET_DIR/console-test.
console_status=ok
bash scripts/console-test.sh || { console_status=FAILED; status=1; }
phase "the console in chromium"
if [ -n "$lambda_pid" ]; then
    wait "$lambda_pid" || { lambda_status=FAILED; status=1; }
    lambda_pid=
    cat "$lambda_log"
    phase "waiting for the Lambda build"
fi
# One closing line for the whole run (cargo prints one per test binary).
awk -v lambda="$lambda_status" -v api="$api_status" -v console="$console_status" '/^test result:/ { p += $4; f += $6; s += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped; schemathesis: %s; console in chromium: %s; Lambda build and sam build: %s\n", p, f, s, api, console, lambda }' "$log"
exit "$status"
