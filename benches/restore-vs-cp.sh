#!/usr/bin/env bash
# A restore against its floor, `cp -a` of the same tree, each into a filesystem of its own.
#
# usage: benches/restore-vs-cp.sh [CORPUS]     (src by default; vol, mixed, tiny)
# env: REPS (default 3), PEERBENCH_DATA (default /var/tmp/peerbench), FS_SIZE (default 8G).
# Needs root (loop mounts). Backs the corpus up once into a fresh bunker repository, then for
# each repetition, interleaved: `cp -a` of the corpus, then `bunker restore latest`, each
# into a new ext4 (with a journal) made on a sparse image and loop-mounted for that one run.
#
# Why a filesystem per run: on an ext4 without a journal (this machine's root), the inode
# allocator skips every inode freed in the last 60 to 360 seconds, reading its inode-table
# block each time (`recently_deleted` in fs/ext4/ialloc.c). After a tree of 78k files was
# deleted, creating the next one costs seconds of system time: the same restore took 4 s or
# 20 s depending on what was removed before it, and so did `cp -a`.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${1:-src}
reps=${REPS:-3}
data=${PEERBENCH_DATA:-/var/tmp/peerbench}
source_tree=$data/pristine/$corpus
[[ -e $source_tree ]] || { echo "no corpus at $source_tree: run benches/peers.sh $corpus once" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "needs root (loop mounts)" >&2; exit 2; }

cargo build --release --locked -p bunker-cli
bunker=$PWD/target/release/bunker
work=$data/restore-vs-cp
mnt=$work/mnt
rm -rf "$work"
mkdir -p "$mnt"
export BUNKER_REPOSITORY=$work/repo BUNKER_CACHE_DIR=$work/cache BUNKER_PASSWORD=bench
"$bunker" init >/dev/null
"$bunker" backup --host bench "$source_tree" >/dev/null

# Runs "$@" with its target in a fresh filesystem; prints "wall user sys".
fresh_fs_run() {
    local image=$work/fs.img
    truncate -s "${FS_SIZE:-8G}" "$image"
    mkfs.ext4 -q -F "$image"
    mount -o loop "$image" "$mnt"
    sync
    /usr/bin/time -f "%e %U %S" -o "$work/time" "$@" >/dev/null
    umount "$mnt"
    rm -f "$image"
    cat "$work/time"
}

{
    echo "rep tool wall_s user_s sys_s"
    for rep in $(seq "$reps"); do
        echo "$rep cp-a $(fresh_fs_run cp -a "$source_tree" "$mnt/tree")"
        echo "$rep bunker $(fresh_fs_run "$bunker" restore latest --target "$mnt/tree")"
    done
} | tee "$work/results.txt"
awk 'NR > 1 { wall[$2] += $3; n[$2]++ }
     END { printf "bunker restore / cp -a, mean wall: %.2f (bunker %.2f s, cp -a %.2f s)\n",
           wall["bunker"] / n["bunker"] / (wall["cp-a"] / n["cp-a"]),
           wall["bunker"] / n["bunker"], wall["cp-a"] / n["cp-a"] }' "$work/results.txt"
rm -rf "$work"
