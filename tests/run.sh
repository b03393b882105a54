#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests need,
# then runs every test. README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/browser.rs drives Debian's headless Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  echo "tests/run.sh: installing chromium (needed by tests/browser.rs)"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium >/dev/null
fi

# Benchmarks run once each as smoke tests, then every test.
cargo test --locked --benches
cargo test --locked --lib --bins --tests
