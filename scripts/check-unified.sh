#!/usr/bin/env bash
# Whether the builds CI makes turn on the same features in every crate they share:
#   - the demo's (`cargo run --release -p nearcast`),
#   - the two halves scripts/test.sh runs side by side (`cargo test -p nearcast-tests
#     --test <name>` and `cargo test --workspace --exclude nearcast-tests`),
# each against the build that compiled everything first (`cargo test --workspace --release
# --no-run`). When they do, cargo compiles nearcast-core, -api, -aws and nearcast once for
# all of them; when a crate's features differ, everything above it is compiled again
# (minutes of CI). The fix is printed: the crate and the features to list (for the demo, in
# crates/nearcast/Cargo.toml's unification block). Needs no network and builds nothing
# (`cargo tree` on the lock file).
set -euo pipefail
cd "$(dirname "$0")/.."
tree() { cargo tree -q --locked --offline "$@" -f '{p} [{f}]' --prefix none | sed 's/ (\*)//; s/ (proc-macro)//' | sort -u; }
python3 - <(tree --workspace -e normal,build,dev) \
    "the demo (-p nearcast)" <(tree -p nearcast -e normal,build) \
    "the tests/ binaries (-p nearcast-tests)" <(tree -p nearcast-tests -e normal,build,dev) \
    "the rest (--workspace --exclude nearcast-tests)" <(tree --workspace --exclude nearcast-tests -e normal,build,dev) <<'PY'
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
everything = load(sys.argv[1])
failed = False
for label, path in zip(sys.argv[2::2], sys.argv[3::2]):
    part = load(path)
    stale = [(name, sorted(everything[name] - part[name])) for name in sorted(part)
             if name in everything and everything[name] != part[name]]
    for name, more in stale:
        print(f"check-unified.sh: {label} builds {name} without {more}, which `cargo test --workspace` turns on: add them")
    failed |= bool(stale)
    if not stale:
        print(f"check-unified.sh: {label}: {len(part)} crates, each with the features of `cargo test --workspace`")
sys.exit(1 if failed else 0)
PY
