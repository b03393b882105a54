#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests need,
# then runs every test. README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/browser.rs and tests/url_mode_leaks.rs drive Debian's headless
# Chromium; the Redis store's tests start their own redis-server processes
# (and form a Cluster with redis-cli); tests/assertion.rs rotates the
# signing key with a key made by openssl, as README tells operators to.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Benchmarks run once each as smoke tests, then every test.
cargo test --locked --bench sessions --bench rewrite --bench footprint
cargo test --locked --lib --bins --tests
