#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what the tests need (idempotently), then
# runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v setpriv >/dev/null || need_packages+=(util-linux)
command -v mkfs.ext4 >/dev/null || need_packages+=(e2fsprogs)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_packages+=(postgresql)
if [ ${#need_packages[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_packages[@]}"
fi

cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads="${BUNKER_TEST_THREADS:-2}"
