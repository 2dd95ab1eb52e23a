#!/usr/bin/env bash
# The whole test suite, with its own set-up. CI runs exactly this (see .ci/run).
#   bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# Set-up: the Rust toolchain is the only requirement today. Later suites (Docker, WASM
# toolchains) install what they need here, so that a fresh machine passes as it is.
if ! command -v cargo >/dev/null 2>&1; then
  echo "tests/run.sh: cargo is not installed; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
for tool in sh awk sleep true; do
  command -v "$tool" >/dev/null 2>&1 || { echo "tests/run.sh: the tests need \`$tool\` on PATH" >&2; exit 1; }
done
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true

say "format"
cargo fmt --all -- --check

say "lint"
cargo clippy --locked --workspace --all-targets -- -D warnings

say "tests (unit, property, end-to-end, crash; benches run once in smoke mode)"
cargo test --locked --workspace --all-targets
