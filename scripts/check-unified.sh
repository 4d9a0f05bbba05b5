#!/usr/bin/env bash
# Whether the demo's build (`cargo run --release -p nearcast`) and the tests' build
# (`cargo test --workspace --release`) turn on the same features in every crate they share.
# When they do, cargo compiles nearcast-core, -api, -aws and nearcast once for both; when a
# crate's features differ, everything above it is compiled twice (minutes of CI). The fix is
# printed: the crate and the features to list in crates/nearcast/Cargo.toml's unification
# block. Needs no network and builds nothing (`cargo tree` on the lock file).
set -euo pipefail
cd "$(dirname "$0")/.."
tree() { cargo tree -q --locked --offline "$@" -f '{p} [{f}]' --prefix none | sed 's/ (\*)//; s/ (proc-macro)//' | sort -u; }
python3 - <(tree -p nearcast -e normal,build) <(tree --workspace -e normal,build,dev) <<'PY'
import sys
def load(path):
    crates = {}
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        name, _, feats = line.rpartition(" [")
        crates.setdefault(name, set()).update(f for f in feats.rstrip("]").split(",") if f)
    return crates
demo, tests = load(sys.argv[1]), load(sys.argv[2])
stale = [(name, sorted(tests[name] - demo[name])) for name in sorted(demo)
         if name in tests and tests[name] != demo[name]]
for name, more in stale:
    print(f"check-unified.sh: the tests build {name} with {more} too: add them to crates/nearcast/Cargo.toml")
if stale:
    sys.exit(1)
print(f"check-unified.sh: the demo's {len(demo)} crates have the tests' features")
PY
