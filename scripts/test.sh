#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what the tests need (idempotently), then
# runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v setpriv >/dev/null || need_packages+=(util-linux)
command -v mkfs.ext4 >/dev/null || need_packages+=(e2fsprogs)
command -v mkfs.btrfs >/dev/null || need_packages+=(btrfs-progs)
command -v qemu-img >/dev/null || need_packages+=(qemu-utils)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_packages+=(postgresql)
# The HTML recovery report is rendered in headless Chromium (cli/tests/report.rs).
command -v chromium >/dev/null || need_packages+=(chromium)
if [ ${#need_packages[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_packages[@]}"
fi

cargo build --workspace --all-targets --locked
# The fuzz targets are their own workspace (fuzz/README.md): their lock file must still
# match their manifest and the library's dependencies (it had gone stale once). Resolving
# is a second; type-checking them (`cargo check --manifest-path fuzz/Cargo.toml --bins
# --locked`) takes 43 s and is left to fuzz campaigns, to keep this run within its time.
cargo metadata --locked --manifest-path fuzz/Cargo.toml --format-version 1 >/dev/null

# The S3 tests run against moto's server (pinned, installed in target/moto-venv), started
# here on a free port and stopped on exit. Tests find it through BUNKER_TEST_S3_ENDPOINT.
server=$(scripts/moto-server.sh)
export BUNKER_TEST_S3_ENDPOINT=$(sed -n 1p <<<"$server")
moto_pid=$(sed -n 2p <<<"$server")
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
echo "moto S3 server at $BUNKER_TEST_S3_ENDPOINT (pid $moto_pid)"
cargo test --workspace --locked -- --test-threads="${BUNKER_TEST_THREADS:-2}"
