#!/usr/bin/env bash
# Backup and restore throughput against the local S3 test server (moto) versus a local
# directory, in the same run (issue 5's target: S3 >= 0.7x local). Not part of the tests.
#
# Usage: benches/s3-throughput.sh [CORPUS]
#   CORPUS: a directory, a corpus name of ../shared/bench (`src`, `mixed`, `tiny`, found in
#   $PEERBENCH_DATA/pristine/NAME, default /var/tmp/peerbench), or `generated` (the default:
#   a reproducible ~300 MB tree, BENCH_MB to change its size).
# Env: REPS (default 2) rounds of local + S3, interleaved; BENCH_WORK (default
# target/s3-throughput); S3_SERVER=moto (the test server, default) or s3s (s3s-fs, a Rust S3
# server over a directory, to tell bunker's S3 path from moto's own cost); PIN=1 gives the
# S3 server a core of its own (the last one) and runs
# bunker on the others, in both the local and the S3 runs, the way a real S3 endpoint does
# not share the client's CPU (on a 2-core machine bunker then has one core).
#
# Builds the release binary, starts the S3 server (stopped on exit), warms
# the corpus into the page cache, then per round: init + backup + restore into a local
# directory, and the same into a fresh bucket. Prints wall time, MB/s, the CPU seconds of
# bunker and of the S3 server (from /proc/PID/stat) for every phase, and the S3/local
# throughput ratios of the best round. Every restore is compared with the corpus (diff -r).
set -euo pipefail
cd "$(dirname "$0")/.."

corpus_arg=${1:-generated}
reps=${REPS:-2}
work=${BENCH_WORK:-target/s3-throughput}
mkdir -p "$work"
work=$(realpath "$work")

echo "== machine: $(nproc) cores, $(uptime | sed 's/.*load/load/')"
cargo build --release --locked -p bunker-cli >&2
bunker=$PWD/target/release/bunker

case "$corpus_arg" in
generated)
    corpus=$work/corpus-generated
    mb=${BENCH_MB:-300}
    if [ "$(cat "$corpus/.mb" 2>/dev/null)" != "$mb" ]; then
        rm -rf "$corpus"
        # 3/4 incompressible (random files of 1-8 MiB), 1/4 compressible text in small files.
        python3 - "$corpus" "$mb" <<'EOF'
import os, random, sys
root, mb = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
random_bytes, text_bytes = mb * 3 // 4 << 20, mb // 4 << 20
n = 0
while random_bytes > 0:
    size = min(random_bytes, rng.randint(1 << 20, 8 << 20))
    d = os.path.join(root, "bin", f"d{n % 8}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{n}.bin"), "wb") as f:
        f.write(rng.randbytes(size))
    random_bytes -= size
    n += 1
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
n = 0
while text_bytes > 0:
    size = min(text_bytes, rng.randint(2 << 10, 200 << 10))
    d = os.path.join(root, "text", f"d{n % 32}")
    os.makedirs(d, exist_ok=True)
    out, length = [], 0
    while length < size:
        line = b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
        out.append(line)
        length += len(line)
    with open(os.path.join(d, f"t{n}.txt"), "wb") as f:
        f.write(b"".join(out)[:size])
    text_bytes -= size
    n += 1
EOF
        echo "$mb" >"$corpus/.mb"
    fi
    ;;
*/*) corpus=$(realpath "$corpus_arg") ;;
*) corpus=${PEERBENCH_DATA:-/var/tmp/peerbench}/pristine/$corpus_arg ;;
esac
[ -d "$corpus" ] || { echo "no corpus at $corpus" >&2; exit 1; }
bytes=$(find "$corpus" -type f ! -name .mb -printf '%s\n' | awk '{s+=$1} END {print s}')
files=$(find "$corpus" -type f ! -name .mb | wc -l)
find "$corpus" -type f -print0 | xargs -0 cat >/dev/null # read from page cache, both ways
echo "== corpus $corpus: $files files, $bytes bytes"

server_kind=${S3_SERVER:-moto}
case "$server_kind" in
moto)
    # moto spools every object larger than this buffer (default 5 MiB - 1 KiB) to a temporary
    # file, so each 16 MiB pack costs the server a file write on its own CPU: that is moto's
    # storage, not the client's S3 path, and it alone held the backup to 0.54-0.69x. The
    # bench keeps objects in moto's memory; MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=5241856 measures
    # moto as the tests run it.
    export MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=${MOTO_S3_DEFAULT_KEY_BUFFER_SIZE:-67108864}
    server=$(scripts/moto-server.sh)
    endpoint=$(sed -n 1p <<<"$server")
    server_pid=$(sed -n 2p <<<"$server")
    make_bucket() { curl -sf -X PUT "$endpoint/$1" >/dev/null; }
    ;;
s3s)
    # s3s-fs: an S3 server in Rust over a directory, pinned (0.14.1 is the last release that
    # builds with our toolchain). No Object Lock, so only for throughput.
    s3s=target/s3s-fs/bin/s3s-fs
    if [ ! -x "$s3s" ]; then
        echo "installing s3s-fs 0.14.1 into target/s3s-fs" >&2
        cargo install -q --locked --root target/s3s-fs s3s-fs@0.14.1 --features binary >&2
    fi
    s3s_root=$work/s3s-data
    rm -rf "$s3s_root"
    mkdir -p "$s3s_root"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$s3s" --host 127.0.0.1 --port "$port" --access-key testing --secret-key testing \
        "$s3s_root" >"$work/s3s-fs.log" 2>&1 &
    server_pid=$!
    endpoint=http://127.0.0.1:$port
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "$endpoint/" && break
        sleep 0.1
    done
    make_bucket() { mkdir -p "$s3s_root/$1"; }
    ;;
*) echo "S3_SERVER must be moto or s3s" >&2; exit 2 ;;
esac
trap 'kill "$server_pid" 2>/dev/null || true' EXIT
echo "== $server_kind at $endpoint (pid $server_pid)"
pin=()
if [ "${PIN:-0}" = 1 ]; then
    last=$(($(nproc) - 1))
    [ "$last" -ge 1 ] || { echo "PIN=1 needs at least 2 cores" >&2; exit 1; }
    taskset -a -pc "$last" "$server_pid" >/dev/null
    pin=(taskset -c "0-$((last - 1))")
    echo "== pinned: $server_kind on core $last, bunker on cores 0-$((last - 1))"
fi
export AWS_ENDPOINT_URL=$endpoint AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1 BUNKER_PASSWORD=bench XDG_CACHE_HOME=$work/cache

# CPU seconds (user + system) a process has used so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }

# timed LABEL CMD...: runs CMD, prints one line, appends "LABEL wall" to $work/walls.
timed() {
    local label=$1
    shift
    local server0 t0 t1 server1
    sync
    server0=$(cpu_of "$server_pid")
    t0=$(date +%s.%N)
    /usr/bin/time -f "%U %S %M" -o "$work/time.txt" "${pin[@]}" "$@" >"$work/$label.out" 2>"$work/$label.err" || {
        echo "$label failed:" >&2
        cat "$work/$label.err" >&2
        exit 1
    }
    t1=$(date +%s.%N)
    server1=$(cpu_of "$server_pid")
    read -r user sys rss <"$work/time.txt"
    awk -v l="$label" -v t0="$t0" -v t1="$t1" -v b="$bytes" -v u="$user" -v s="$sys" \
        -v r="$rss" -v m0="$server0" -v m1="$server1" 'BEGIN {
        w = t1 - t0
        printf "%-16s wall %7.2f s  %7.1f MB/s  bunker cpu %6.2f s  server cpu %6.2f s  rss %4d MiB\n",
            l, w, b / w / 1e6, u + s, m1 - m0, r / 1024 }'
    echo "$label $(awk -v t0="$t0" -v t1="$t1" 'BEGIN {print t1 - t0}')" >>"$work/walls"
}

: >"$work/walls"
for rep in $(seq 1 "$reps"); do
    rm -rf "$work/local-repo" "$work/restore-local" "$work/restore-s3" "$work/cache"
    bucket=bench-$rep-$$
    make_bucket "$bucket"
    "$bunker" --repo "$work/local-repo" init >/dev/null
    "$bunker" --repo "s3://$bucket/repo" init >/dev/null
    timed "backup-local-$rep" "$bunker" --repo "$work/local-repo" backup "$corpus"
    timed "backup-s3-$rep" "$bunker" --repo "s3://$bucket/repo" backup "$corpus"
    timed "restore-local-$rep" "$bunker" --repo "$work/local-repo" restore latest --target "$work/restore-local"
    timed "restore-s3-$rep" "$bunker" --repo "s3://$bucket/repo" restore latest --target "$work/restore-s3"
    for kind in local s3; do
        diff -r --no-dereference "$corpus" "$work/restore-$kind$corpus" >/dev/null ||
            { echo "restore from $kind DIFFERS from the corpus" >&2; exit 1; }
    done
    echo "   repo sizes: local $(du -sb "$work/local-repo" | cut -f1) bytes; restores identical"
done
rm -rf "$work/restore-local" "$work/restore-s3"

best() { grep "^$1-" "$work/walls" | awk 'NR == 1 || $2 < m {m = $2} END {print m}'; }
for phase in backup restore; do
    l=$(best "$phase-local")
    s=$(best "$phase-s3")
    awk -v p="$phase" -v l="$l" -v s="$s" -v b="$bytes" 'BEGIN {
        printf "== %-7s best of runs: local %.2f s (%.0f MB/s), S3 %.2f s (%.0f MB/s): S3/local throughput %.2fx\n",
            p, l, b / l / 1e6, s, b / s / 1e6, l / s }'
done
echo "== load after: $(uptime | sed 's/.*load/load/')"
