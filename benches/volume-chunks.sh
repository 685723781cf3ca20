#!/usr/bin/env bash
# Volume chunk size benchmark: backs up one ext4 image with each volume chunk size, then a
# copy with ~2% of it rewritten (the peer benchmark's `vol` change step: 32 fixed 2 MiB
# ranges, half random, half copied from elsewhere shifted by 1234 bytes), and restores it.
# Prints backup wall time, repository size, growth after the change, restore wall time.
#
# usage: benches/volume-chunks.sh IMAGE [CHUNK_KIB...]   (default: 1024 4096)
# env:   BUNKER_BIN (default target/release/bunker), WORK (default /var/tmp/bunker-volume-bench)
set -euo pipefail
image=$(realpath "$1"); shift
if [ $# -gt 0 ]; then sizes=("$@"); else sizes=(1024 4096); fi
bin=$(realpath "${BUNKER_BIN:-target/release/bunker}")
work=${WORK:-/var/tmp/bunker-volume-bench}
mkdir -p "$work"
export BUNKER_PASSWORD=bench

changed="$work/changed.img"
if [ ! -e "$changed" ]; then
  cp --sparse=always "$image" "$changed"
  python3 - "$changed" <<'PY'
import os, sys, random
p = sys.argv[1]
size = os.path.getsize(p)
rng = random.Random(20240601)
R = 2 << 20
n = 32
with open(p, 'r+b') as fh:
    for k in range(n):
        off = (size // n) * k + (size // n) // 3
        off -= off % 4096
        if k % 2 == 0:
            data = rng.randbytes(R)
        else:
            fh.seek((off + size // 2) % (size - R) + 1234); data = fh.read(R)
        fh.seek(off); fh.write(data)
PY
fi
cat "$image" "$changed" > /dev/null   # both in the page cache

wall() { /usr/bin/time -f %e "$@" 2>&1 >/dev/null | tail -1; }
printf '%-10s %10s %12s %10s %14s %10s\n' chunk backup_s repo_bytes chg_s chg_growth restore_s
for kib in "${sizes[@]}"; do
  repo="$work/repo-$kib"
  rm -rf "$repo" "$work/out.img"
  export BUNKER_REPOSITORY=$repo
  "$bin" init --kdf-memory-kib 1024 --kdf-iterations 1 --volume-chunk-kib "$kib" >/dev/null
  sync
  t_full=$(wall "$bin" backup --volume "$image" --name vol)
  size_full=$(du -sb "$repo" | cut -f1)
  sync
  t_chg=$(wall "$bin" backup --volume "$changed" --name vol)
  size_chg=$(du -sb "$repo" | cut -f1)
  sync
  t_restore=$(wall "$bin" restore latest --volume-target "$work/out.img")
  cmp "$changed" "$work/out.img"
  printf '%-10s %10s %12s %10s %14s %10s\n' "${kib}KiB" "$t_full" "$size_full" "$t_chg" \
    "$((size_chg - size_full))" "$t_restore"
done
