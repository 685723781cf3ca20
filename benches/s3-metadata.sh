#!/usr/bin/env bash
# What the host's copies of an S3 repository's metadata save: metadata-heavy commands timed
# with the copies and with --no-cache, against the local S3 test server (moto) behind a
# proxy that holds each request DELAY_MS (a bucket that far away). Not part of the tests.
#
# Usage: benches/s3-metadata.sh [SNAPSHOTS] [DELAY_MS]      (defaults: 100, 20)
#
# Builds the release binary, starts moto and the proxy (both stopped on exit), makes a
# repository of SNAPSHOTS backups of 2,000 small files (one file changed before each, so
# as many index segments and tree packs), talking to moto directly, then times each command
# twice per mode through the proxy. The no-change backup of the --no-cache mode reads
# every file again (no files cache either): its "copies" row is the one to quote, with
# the first run's row of a cache directory holding only the files cache beside it.
set -euo pipefail
cd "$(dirname "$0")/.."

snapshots=${1:-100}
delay=${2:-20}
work=target/s3-metadata
rm -rf "$work" && mkdir -p "$work"
work=$(realpath "$work")

cargo build --release --locked -p bunker-cli >&2
bunker=$PWD/target/release/bunker
server=$(scripts/moto-server.sh)
endpoint=$(sed -n 1p <<<"$server")
moto_pid=$(sed -n 2p <<<"$server")
proxy_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 benches/latency_proxy.py "$proxy_port" "${endpoint##*:}" "$delay" &
proxy_pid=$!
trap 'kill "$moto_pid" "$proxy_pid" 2>/dev/null || true' EXIT

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export BUNKER_PASSWORD=bench BUNKER_REPOSITORY=s3://bench/repo BUNKER_CACHE_DIR=$work/cache
curl -fsS -X PUT "$endpoint/bench" >/dev/null

python3 - "$work/src" <<'PY'
import os, random, sys
random.seed(1)
root = sys.argv[1]
for d in range(40):
    os.makedirs(f"{root}/d{d}", exist_ok=True)
    for f in range(50):
        with open(f"{root}/d{d}/f{f}", "wb") as out:
            out.write(random.randbytes(random.randint(100, 20000)))
PY
export AWS_ENDPOINT_URL=$endpoint
"$bunker" init --kdf-memory-kib 1024 --kdf-iterations 1 >/dev/null
for i in $(seq 1 "$snapshots"); do
    echo "$i" >"$work/src/d$((i % 40))/changed"
    "$bunker" backup "$work/src" >/dev/null
done
export AWS_ENDPOINT_URL=http://127.0.0.1:$proxy_port

# Seconds one run of "$@" took (its output dropped; a failure stops the bench).
seconds() {
    local start=$EPOCHREALTIME
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
    python3 -c "print(f'{$EPOCHREALTIME - $start:.2f}')"
}

echo "== $snapshots snapshots, ${delay} ms per request, $(nproc) cores, $(uptime | sed 's/.*load/load/')"
printf '%-28s %-14s %-14s\n' command "--no-cache" "copies"
commands=("snapshots" "ls latest" "diff latest~1 latest" "backup $work/src" "prune --dry-run")
for command in "${commands[@]}"; do
    read -ra args <<<"$command"
    uncached="$(seconds "$bunker" "${args[@]}" --no-cache) $(seconds "$bunker" "${args[@]}" --no-cache)"
    cached="$(seconds "$bunker" "${args[@]}") $(seconds "$bunker" "${args[@]}")"
    printf '%-28s %-14s %-14s\n' "${command/$work\//}" "$uncached" "$cached"
done
# A restore into a fresh directory each time.
restore() {
    rm -rf "$work/restore"
    seconds "$bunker" restore latest --target "$work/restore" "$@"
}
uncached="$(restore --no-cache) $(restore --no-cache)"
cached="$(restore) $(restore)"
printf '%-28s %-14s %-14s\n' "restore latest" "$uncached" "$cached"
echo "copies: $(du -sh "$work/cache" | cut -f1) in $work/cache"
