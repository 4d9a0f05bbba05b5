#!/usr/bin/env bash
# Builds the three Lambda functions (functions/events-api, admin-api, events-queue) for
# Lambda's arm64 with cargo-lambda and Zig, checks the zips, then checks infra/template.yaml
# with `sam validate --lint` and builds it with `sam build`. No Docker.
#
#   bash scripts/build-lambdas.sh
#
# Creates (once) a virtualenv with cargo-lambda, ziglang and the AWS SAM CLI, every package
# pinned in scripts/requirements-lambda.txt, reached from the clone as .venv-lambda (a link),
# and adds rustup's
# aarch64-unknown-linux-gnu target if it is missing. Those two steps need PyPI and the Rust
# toolchain server, and the first build needs crates.io for crates not yet in ~/.cargo; after
# that a run needs no network.
#
# It builds in NEARCAST_LAMBDA_TARGET_DIR (default ~/.cache/nearcast-lambda-target), exported
# as CARGO_TARGET_DIR for cargo-lambda and for sam build, and deliberately not the tests'
# CARGO_TARGET_DIR (~/.cache/nearcast-target): cargo locks a target directory, so a build
# there would wait for the tests and the tests for it. There:
#   lambda/nearcast-<function>/bootstrap.zip   the function's zip, uploadable as it is
#   sam/build/template.yaml                    sam build's output; deploy it from infra/ with
#     ../.venv-lambda/bin/sam deploy --guided --config-file "$PWD/samconfig.toml" \
#       --template-file ~/.cache/nearcast-lambda-target/sam/build/template.yaml
#
# Each function is built on its own, as sam build builds it (`cargo lambda build --bin ...` in
# its crate): building the three at once would unify their dependencies' features, and
# should one function ever use other features than the others, sam build would then compile
# the whole tree again. Built this way, sam build finds every function up to date and only
# copies it. Today the three resolve the same features (`cargo tree -e normal -f '{p} {f}'`),
# so a first run compiles the dependency tree once; a fresh clone compiles only the
# workspace's own crates, and nothing at all when a build of the very same inputs has
# already passed every check here (see "already built and checked?" below); a run with
# nothing changed compiles nothing and zips nothing. The compiles run at `nice -n 10`.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${NEARCAST_LAMBDA_TARGET_DIR:-$HOME/.cache/nearcast-lambda-target}"
SAM_DIR="$OUT/sam"
# The tools' virtualenv lives beside the builds, at a path that does not depend on the clone,
# and the clone links to it: cargo-lambda writes the path of its own executable into the
# linker and C compiler wrappers it hands to cargo, and cargo rebuilds every crate whose
# linker or compiler changed. With the venv inside each fresh clone, every CI run compiled
# the whole dependency tree for arm64 again (17 minutes for the first function).
VENV="$OUT/venv"
mkdir -p "$OUT"
if [ -d .venv-lambda ] && [ ! -L .venv-lambda ]; then rm -rf .venv-lambda; fi
ln -sfn "$VENV" .venv-lambda
REQUIREMENTS=scripts/requirements-lambda.txt
STAMP="$VENV/.lambda-$(sha256sum "$REQUIREMENTS" | cut -c1-16)"
RUST_TARGET=aarch64-unknown-linux-gnu
# function (package and binary nearcast-<function>) and its resource in infra/template.yaml
FUNCTIONS=(events-api admin-api events-queue)
declare -A RESOURCE=([events-api]=EventsApiFunction [admin-api]=AdminApiFunction
                     [events-queue]=EventsQueueFunction)

say() { echo "build-lambdas.sh: $*" >&2; }

# ---------------------------------------------------------------- tools
installed() {
    [ -f "$STAMP" ] && [ -x "$VENV/bin/cargo-lambda" ] && [ -x "$VENV/bin/sam" ] \
        && [ -x "$VENV/bin/python-zig" ]
}
if ! installed; then
    # Two runs at once: one installs, the other waits (where flock(1) exists). The lock is
    # on the venv's directory itself, which `venv --clear` empties but keeps.
    mkdir -p "$VENV"
    exec 9<"$VENV"
    if command -v flock >/dev/null; then flock 9; fi
    if ! installed; then
        say "installing $REQUIREMENTS into $VENV"
        # --clear: a changed requirements file gives exactly its packages, nothing left over.
        python3 -m venv --clear "$VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
        touch "$STAMP"
    fi
    exec 9>&-
fi

if ! grep -qx "$RUST_TARGET" <<<"$(rustup target list --installed)"; then
    say "adding the Rust target $RUST_TARGET"
    rustup target add "$RUST_TARGET"
fi

# cargo-lambda, sam and python3 from the venv. cargo-lambda's cargo-zigbuild looks for `zig`
# on PATH and then runs `python3 -m ziglang`: the venv's python3, which has ziglang.
export PATH="$VENV/bin:$PATH"
export CARGO_TARGET_DIR="$OUT"
# Nothing to the internet: no SAM telemetry, no SAM version check (it asks pypi.org once a
# week, recorded in its app directory, here one of our own with the check marked as done),
# no EC2 instance metadata lookups by botocore.
export SAM_CLI_TELEMETRY=0
export __SAM_CLI_APP_DIR="$SAM_DIR/app"
export AWS_EC2_METADATA_DISABLED=true
mkdir -p "$__SAM_CLI_APP_DIR"
python3 - "$__SAM_CLI_APP_DIR/metadata.json" <<'EOF'
import json, sys, time
path = sys.argv[1]
try:
    with open(path) as f:
        data = json.load(f)
except (OSError, ValueError):
    data = {}
data.update(telemetryEnabled=False, lastVersionCheck=time.time())
with open(path, "w") as f:
    json.dump(data, f, indent=4)
EOF

# One run at a time per output directory (sam build rewrites its build directory).
exec 8>"$OUT/.build-lambdas.lock"
if command -v flock >/dev/null; then flock 8; fi

say "cargo-lambda $(cargo-lambda lambda --version | cut -d' ' -f2), zig $(python3 -m ziglang version), $(sam --version)"
say "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

# ---------------------------------------------------------------- already built and checked?
# A build is keyed by everything that goes into it (scripts/lambda-inputs-key.sh: the
# toolchain, cargo's settings from the environment, this script, the tools' pins, and every
# file of the clone a function can read). Once a build of those inputs has passed every
# check below, the record $OUT/checked/<key> holds the SHA-256 of each zip and of each of
# sam build's outputs; a later run with the same inputs whose outputs still hash the same
# (no other build has replaced them since) has nothing to build. A fresh clone of an
# unchanged tree is such a run: cargo would recompile the workspace's crates only because
# the clone's files are newer. NEARCAST_LAMBDA_REBUILD=1 builds anyway.
CHECKED="$OUT/checked"
key="$(bash scripts/lambda-inputs-key.sh)"
outputs=()
for f in "${FUNCTIONS[@]}"; do
    outputs+=("$OUT/lambda/nearcast-$f/bootstrap.zip" "$SAM_DIR/build/${RESOURCE[$f]}/bootstrap")
done
outputs+=("$SAM_DIR/build/template.yaml")
up_to_date=false
if [ -n "$key" ] && [ "${NEARCAST_LAMBDA_REBUILD:-0}" != 1 ] && [ -f "$CHECKED/$key" ] \
    && sha256sum --quiet --check "$CHECKED/$key" >/dev/null 2>&1; then
    up_to_date=true
    say "inputs $key: built and checked on $(date -u -r "$CHECKED/$key" '+%Y-%m-%d %H:%M UTC'), and the zips and sam build's outputs are those: nothing to build (NEARCAST_LAMBDA_REBUILD=1 builds anyway)"
fi

# ---------------------------------------------------------------- cargo lambda build
# Whether a zip holds this very bootstrap (same size and CRC-32).
zip_holds() {
    python3 - "$1" "$2" <<'EOF'
import os, sys, zipfile, zlib
zip_path, binary = sys.argv[1:]
try:
    info = zipfile.ZipFile(zip_path).getinfo("bootstrap")
except (OSError, KeyError, zipfile.BadZipFile):
    sys.exit(1)
crc = 0
with open(binary, "rb") as f:
    while chunk := f.read(1 << 20):
        crc = zlib.crc32(chunk, crc)
sys.exit(0 if (info.file_size, info.CRC) == (os.path.getsize(binary), crc) else 1)
EOF
}

for f in "${FUNCTIONS[@]}"; do
    $up_to_date && break
    dir="$OUT/lambda/nearcast-$f"
    build=(cargo lambda build --release --arm64 --locked --lambda-dir "$OUT/lambda" -p "nearcast-$f")
    say "${build[*]}"
    start=$SECONDS
    nice -n 10 "${build[@]}"
    # The binary is now $dir/bootstrap, where sam build takes it from too. cargo-lambda
    # compresses it again on every zip build (seconds for 80 MB): zip only when it changed
    # (the second build compiles nothing).
    if ! zip_holds "$dir/bootstrap.zip" "$dir/bootstrap"; then
        say "${build[*]} --output-format zip"
        nice -n 10 "${build[@]}" --output-format zip
    fi
    say "nearcast-$f built in $((SECONDS - start)) s"
done

# Each zip: one executable `bootstrap`, an ELF 64-bit little-endian aarch64 executable.
zips=()
for f in "${FUNCTIONS[@]}"; do zips+=("$OUT/lambda/nearcast-$f/bootstrap.zip"); done
for z in "${zips[@]}"; do python3 -m zipfile -l "$z"; done
python3 - "${zips[@]}" <<'EOF'
import os, stat, struct, sys, zipfile
failed = False
for path in sys.argv[1:]:
    problems = []
    unpacked = 0
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        if "bootstrap" not in names:
            problems.append(f"no bootstrap in {names}")
        else:
            info = z.getinfo("bootstrap")
            unpacked = info.file_size
            mode = info.external_attr >> 16
            if not mode & stat.S_IXUSR:
                problems.append(f"bootstrap is not executable (mode {oct(mode)})")
            head = z.open("bootstrap").read(20)
            if head[:4] != b"\x7fELF":
                problems.append("bootstrap is not an ELF file")
            elif head[4] != 2 or head[5] != 1:
                problems.append("bootstrap is not ELF 64-bit little-endian")
            else:
                e_type, e_machine = struct.unpack_from("<HH", head, 16)
                if e_machine != 0xB7:
                    problems.append(f"bootstrap's e_machine is {e_machine:#x}, not 0xb7 (aarch64)")
                if e_type not in (2, 3):
                    problems.append(f"bootstrap's e_type is {e_type}, not an executable")
    size = os.path.getsize(path)
    status = "; ".join(problems) if problems else "ok: executable bootstrap, ELF 64-bit aarch64"
    print(f"{path}: {size} bytes ({size / 1024:.1f} KiB), "
          f"bootstrap {unpacked} bytes unpacked; {status}")
    failed |= bool(problems)
sys.exit(1 if failed else 0)
EOF

# ---------------------------------------------------------------- SAM
say "sam validate --lint"
sam validate --lint --template infra/template.yaml

# sam build runs `cargo lambda build --release --arm64 --bin nearcast-<function>` in each
# function's crate with the CARGO_TARGET_DIR above (aws-lambda-builders keeps an explicit one),
# so it finds the functions just built. Not --cached: SAM would hash only each function's
# CodeUri, not the workspace crates it depends on, and could keep a stale function.
if ! $up_to_date; then
    say "sam build --beta-features"
    start=$SECONDS
    (cd infra && nice -n 10 sam build --beta-features --template template.yaml --build-dir "$SAM_DIR/build")
    say "sam build took $((SECONDS - start)) s"
fi

# sam build packages the very binaries checked above, unless a source changed meanwhile.
for f in "${FUNCTIONS[@]}"; do
    if ! python3 - "$OUT/lambda/nearcast-$f/bootstrap.zip" "$SAM_DIR/build/${RESOURCE[$f]}/bootstrap" <<'EOF'
import hashlib, sys, zipfile
zipped = zipfile.ZipFile(sys.argv[1]).read("bootstrap")
with open(sys.argv[2], "rb") as f:
    built = f.read()
same = hashlib.sha256(zipped).digest() == hashlib.sha256(built).digest()
print(f"{sys.argv[2]}: {len(built)} bytes, {'the same as' if same else 'DIFFERENT from'} {sys.argv[1]}'s bootstrap")
sys.exit(0 if same else 1)
EOF
    then
        say "sam build built another nearcast-$f than the zip's: a source changed during the run? Run again."
        exit 1
    fi
done

# Every check passed: record these inputs' outputs (the newest 20 records are kept).
if [ -n "$key" ] && ! $up_to_date; then
    mkdir -p "$CHECKED"
    sha256sum "${outputs[@]}" >"$CHECKED/$key.tmp" && mv "$CHECKED/$key.tmp" "$CHECKED/$key"
    ls -t "$CHECKED" | tail -n +21 | while read -r old; do rm -f "$CHECKED/$old"; done
    say "inputs $key: recorded as built and checked"
fi

echo
echo "zips:        $OUT/lambda/nearcast-{events-api,admin-api,events-queue}/bootstrap.zip"
echo "sam build:   $SAM_DIR/build/template.yaml"
echo "deploy (from infra/; without --guided once infra/samconfig.toml exists):"
echo "  ../.venv-lambda/bin/sam deploy --guided --config-file \"\$PWD/samconfig.toml\" --template-file $SAM_DIR/build/template.yaml"
