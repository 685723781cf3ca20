#!/usr/bin/env bash
# Whole-process comparison with restic on the linux-source corpus of ../shared/bench:
# first backup, no-change backup, restore; wall time and peak RSS under /usr/bin/time, and
# repository sizes. Needs `restic` (apt) and the corpus (`../shared/bench/make-corpus.sh
# build src`). Not part of the test suite. Usage: benches/compare-restic.sh [CORPUS_DIR]
set -u
cd "$(dirname "$0")/.."
src=${1:-${PEERBENCH_DATA:-/var/tmp/peerbench}/pristine/src}
work=${BENCH_WORK:-target/compare-restic}
# The restores below create whole trees: a previous run's, deleted here, is waited out first
# on a filesystem whose inode allocator would pass over its inodes (recent-deletions.sh).
. benches/recent-deletions.sh
remove_tree "$work" "$(dirname "$work")"
mkdir -p "$work"
wait_out_deletions "$(dirname "$work")"
cargo build --release --locked -p bunker-cli >/dev/null 2>&1
bunker=$PWD/target/release/bunker
find "$src" -type f -print0 | xargs -0 cat > /dev/null   # both tools read from page cache
timed() {
    local label=$1; shift
    sync
    /usr/bin/time -f "$label wall=%e s user=%U sys=%S maxrss=%M KiB" "$@" > "$work/$label.out" 2> "$work/$label.err"
    tail -1 "$work/$label.err"
}
export BUNKER_REPOSITORY=$work/bunker BUNKER_PASSWORD=bench
export RESTIC_REPOSITORY=$work/restic RESTIC_PASSWORD=bench
"$bunker" init >/dev/null
restic init --repository-version 2 -q
timed bunker-full "$bunker" backup "$src"
echo "bunker repo after full: $(du -sb "$work/bunker" | cut -f1)"
timed bunker-nochg "$bunker" backup "$src"
echo "bunker repo after nochg: $(du -sb "$work/bunker" | cut -f1)"
timed bunker-restore "$bunker" restore latest --target "$work/bunker-restore"
timed restic-full restic backup -q "$src"
echo "restic repo after full: $(du -sb "$work/restic" | cut -f1)"
timed restic-nochg restic backup -q "$src"
timed restic-restore restic restore -q latest --target "$work/restic-restore"
diff -r --no-dereference "$src" "$work/bunker-restore$(realpath "$src")" >/dev/null \
    && echo "bunker restore identical" || echo "bunker restore DIFFERS"
