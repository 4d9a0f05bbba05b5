#!/usr/bin/env bash
# Runs a command with moto's AWS mock server on a free loopback port, so the DynamoDB
# store is tested through the real AWS SDK without an AWS account or any network but PyPI.
#
#   bash scripts/moto.sh cargo test --workspace --release
#   bash scripts/moto.sh --python    # only install (if needed); print the venv's python
#
# (A plain `cargo test` needs neither: each test binary that needs moto runs
# `scripts/moto.sh --python` and starts a server of its own; see nearcast_aws::moto.)
#
# Creates (once) the project-local virtualenv .venv with a pinned moto and a pinned cfn-lint
# (for infra/template.yaml, checked by tests/tests/infra.rs); re-runs reuse it.
# Exports AWS_ENDPOINT_URL, test credentials, AWS_REGION and NEARCAST_MOTO=1 for the
# command, and stops the server when the command ends, whatever its exit status.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION=5.2.5
VENV=.venv
# Every package pinned (moto, cfn-lint and all they pull in), so a fresh machine gets the
# same server and the same linter. Both files are installed together so pip resolves one set.
REQUIREMENTS=(scripts/requirements-moto.txt scripts/requirements-lint.txt)
STAMP="$VENV/.moto-$(cat "${REQUIREMENTS[@]}" | sha256sum | cut -c1-16)"

if [ "$#" -eq 0 ]; then
    echo "usage: bash scripts/moto.sh COMMAND [ARGS...]" >&2
    exit 2
fi

installed() {
    [ -f "$STAMP" ] && [ -x "$VENV/bin/moto_server" ] && [ -x "$VENV/bin/cfn-lint" ]
}

if ! installed; then
    # Test binaries may ask for the venv at the same time: one installs, the others wait
    # (where flock(1) exists).
    mkdir -p "$VENV"
    exec 9>"$VENV/.install.lock"
    if command -v flock >/dev/null; then flock 9; fi
    if ! installed; then
        echo "moto.sh: installing moto[server]==$MOTO_VERSION and cfn-lint into $VENV" >&2
        [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "${REQUIREMENTS[0]}" -r "${REQUIREMENTS[1]}"
        touch "$STAMP"
    fi
    exec 9>&-
fi

if [ "$1" = "--python" ]; then
    echo "$PWD/$VENV/bin/python"
    exit 0
fi

PORT="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
LOG="$(mktemp -t moto.XXXXXX.log)"

# One request at a time: see scripts/moto_server.py.
"$VENV/bin/python" scripts/moto_server.py -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 &
MOTO_PID=$!

stop_moto() {
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
    rm -f "$LOG"
}
trap stop_moto EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Wait until the server answers HTTP (any status), at most 30 s.
if ! "$VENV/bin/python" - "$PORT" "$MOTO_PID" <<'EOF'; then
import os, sys, time, urllib.error, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 30
while time.time() < deadline:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(1)
        time.sleep(0.1)
sys.exit(1)
EOF
    echo "moto.sh: moto_server did not start on 127.0.0.1:$PORT; its log:" >&2
    cat "$LOG" >&2
    exit 1
fi
echo "moto.sh: moto $MOTO_VERSION listening on 127.0.0.1:$PORT" >&2

export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT"
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export NEARCAST_MOTO=1

# Not exec: the EXIT trap must stop the server after the command.
"$@"
