#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests need,
# then runs every test. README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Nothing beyond the Rust toolchain is needed yet; system packages that later
# tests need (redis-server, chromium) are installed here with apt-get.

cargo test --all-targets --locked
