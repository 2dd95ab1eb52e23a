#!/usr/bin/env bash
# The whole test suite, with its own set-up. CI runs exactly this (see .ci/run).
#   bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# Set-up: the Rust toolchain, a private Docker Engine for the container tests, clang with
# wasi-libc for the C plugins (both installed from Debian's packages when missing) and NVRTC
# for the GPU kernels' compile test (from PyPI), so that a fresh machine passes as it is.
if ! command -v cargo >/dev/null 2>&1; then
  echo "tests/run.sh: cargo is not installed; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
for tool in sh awk sleep true; do
  command -v "$tool" >/dev/null 2>&1 || { echo "tests/run.sh: the tests need \`$tool\` on PATH" >&2; exit 1; }
done
# A clean build of the suite takes about 20 GB; CI once ran out of disk half-way through
# the lint, which read as a compiler error. Say so plainly instead.
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [[ -n "$free_kb" && "$free_kb" -lt $((12 * 1024 * 1024)) ]]; then
  echo "tests/run.sh: only $((free_kb / 1024 / 1024)) GB free on $(df -P . | awk 'NR==2 {print $6}'); the build and tests need about 20 GB" >&2
  echo "tests/run.sh: (a long-used target/debug grows large: \`cargo clean\` frees it)" >&2
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy 2>/dev/null || true

say "docker (a private engine for the container tests)"
source tests/docker.sh
trap stop_docker EXIT
start_docker
# The container tests fail rather than skip when no engine answers.
export SLUICE_REQUIRE_DOCKER=1

say "plugins (C plugins built to WASM with Debian's clang + wasi-libc)"
bash plugins/build.sh
# The tests that use them fail rather than skip when they are missing.
export SLUICE_REQUIRE_PLUGINS=1

say "nvrtc (NVIDIA's runtime compiler, for the GPU kernels' compile test; no GPU needed)"
source tests/nvrtc.sh
provide_nvrtc
# That test fails rather than skips without it. The other GPU tests skip loudly without a GPU
# (CI has none); SLUICE_REQUIRE_GPU=1 makes them fail instead, on a GPU machine.
export SLUICE_REQUIRE_NVRTC=1

say "python (a venv with the third-party Python clients the tests use)"
source tests/python.sh
provide_python
# The tests that use it fail rather than skip without it.
export SLUICE_REQUIRE_PYTHON=1

# Installs Debian packages when `command` is missing (as root with apt-get); otherwise says
# what to install. The tests that need them fail rather than skip (the SLUICE_REQUIRE_* below).
provide() {
  local command=$1 why=$2
  shift 2
  command -v "$command" >/dev/null 2>&1 && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null ||
      { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
  else
    echo "tests/run.sh: install $* (Debian) for $why" >&2
  fi
}

say "slurm (a private one-node cluster of Debian's slurm-wlm and munge, for the Slurm steps)"
source tests/slurm.sh
trap 'stop_docker; stop_slurm' EXIT
start_slurm
# The Slurm tests fail rather than skip when no cluster answers.
export SLUICE_REQUIRE_SLURM=1

say "alertmanager (Debian's prometheus-alertmanager, a real sender of alert webhooks)"
command -v alertmanager >/dev/null 2>&1 || provide prometheus-alertmanager "the Alertmanager test" prometheus-alertmanager
export SLUICE_REQUIRE_ALERTMANAGER=1

say "prometheus (Debian's prometheus and promtool: a real scraper of /metrics)"
provide promtool "the metrics test" prometheus
export SLUICE_REQUIRE_PROMETHEUS=1

say "chromium (Debian's headless Chromium and chromedriver: the web UI's tests run in a real browser)"
provide chromedriver "the web UI's browser tests" chromium chromium-driver
export SLUICE_REQUIRE_CHROMIUM=1

say "curl (the closed-loop demo, dags/closed-loop-demo.sh, which a test runs, speaks HTTP with it)"
provide curl "the closed-loop demo's test" curl

say "format"
cargo fmt --all -- --check

say "lint"
cargo clippy --locked --workspace --all-targets -- -D warnings

say "tests (unit, property, end-to-end, crash; benches run once in smoke mode)"
cargo test --locked --workspace --all-targets
