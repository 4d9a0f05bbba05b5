#!/usr/bin/env bash
# The console's browser test (tests/console/walk.mjs): builds the console and the
# nearcast binary, installs Debian's chromium when it is missing, and walks the marketer's
# scenario in it headless. Screenshots go to $CONSOLE_OUT (default: the cargo target
# folder's console-test/).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
target="${CARGO_TARGET_DIR:-$here/target}"
export CONSOLE_OUT="${CONSOLE_OUT:-$target/console-test}"

bash scripts/build-console.sh
if [ -z "${CHROMIUM:-}" ] && ! [ -x /usr/bin/chromium ]; then
  echo "console-test: installing Debian's chromium"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || {
    $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends chromium >/dev/null
  }
fi
cargo build --release --locked -p nearcast --quiet
export NEARCAST_BIN="$target/release/nearcast"
node tests/console/walk.mjs
