#!/usr/bin/env bash
# Prints the digest of everything a Lambda build (scripts/build-lambdas.sh) is made from, in
# the git checkout of the current directory; prints nothing outside one. In it: the Rust
# toolchain, cargo's settings from the environment (RUSTFLAGS, CARGO_PROFILE_*, ...), and
# every file of the checkout, committed or not, untracked too (ignored ones aside), except
# those no function can read: docs/, tests/ (the cross-crate tests), bench/, .ci/, scripts/
# other than build-lambdas.sh and requirements-lambda.txt, and Markdown. build-lambdas.sh
# records each build that passed its checks under this key; tests/tests/infra.rs checks
# what changes it and what does not.
set -euo pipefail
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || exit 0
{
    rustc -vV
    cargo -V
    env | grep -E '^(RUSTFLAGS|RUSTC|RUSTC_WRAPPER|CARGO_ENCODED_RUSTFLAGS|CARGO_BUILD_[A-Z_]*|CARGO_PROFILE_[A-Z_]*|CARGO_TARGET_AARCH64_[A-Z_]*)=' | LC_ALL=C sort || true
    { git ls-files -z --cached --others --exclude-standard -- . ':!docs' ':!tests' \
          ':!bench' ':!.ci' ':!scripts' ':!*.md'
      git ls-files -z --cached --others --exclude-standard -- scripts/build-lambdas.sh \
          scripts/requirements-lambda.txt
    } | LC_ALL=C sort -z | xargs -0 -r sha256sum 2>/dev/null || true
} | sha256sum | cut -c1-32
