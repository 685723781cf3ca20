#!/usr/bin/env bash
# Builds bunker, backs up a sample directory into a fresh local repository, restores it,
# and proves the restore is identical. Leaves everything under ./target/try-it.
set -euo pipefail
# What to back up: this source tree, unless a path is given (relative to where it is run).
sample=$(realpath "${1:-$(dirname "$0")/..}")
cd "$(dirname "$0")/.."

cargo build --release --locked -p bunker-cli
bunker=target/release/bunker
work=target/try-it
rm -rf "$work" && mkdir -p "$work"

export BUNKER_REPOSITORY="$work/repo"
export BUNKER_PASSWORD="try-it-password"
export BUNKER_CACHE_DIR="$work/cache" BUNKER_AUDIT_LOG="$work/audit.jsonl"

"$bunker" init
"$bunker" backup "$sample" --exclude target --exclude .git --tag reason=try-it
"$bunker" backup "$sample" --exclude target --exclude .git --tag reason=try-it-again
"$bunker" snapshots
"$bunker" check --read-data
"$bunker" restore latest --target "$work/restore"
diff -r --no-dereference "$sample" "$work/restore$(realpath "$sample")" --exclude target --exclude .git
echo "restored tree matches $sample; repository size: $(du -sh "$work/repo" | cut -f1)"
