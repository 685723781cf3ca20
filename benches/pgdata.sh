#!/usr/bin/env bash
# What a small change to a PostgreSQL data directory costs the repository: bunker with its
# content-defined chunks, bunker with each `--fixed-chunks SIZE`, and restic, backing up the
# same stopped cluster in one run. The cluster is `pgbench -i -s SCALE`; the change is
# `pgbench -c 1 -t TXNS -n` and a CHECKPOINT, then a clean stop. Prints, per tool, the first
# backup's repository size and wall time, the second backup's repository growth, bunker's
# plaintext added and the wall time, a restore's wall time, and how many 8 KiB pages of the
# directory changed.
#
# usage: benches/pgdata.sh            (as root: the cluster runs as the postgres user)
# env:   SCALE (default 40: a 1.1 GiB directory), TXNS (default 1000), SIZES (default
#        "16K 64K 256K"), BUNKER_BIN (default target/release/bunker, built when missing),
#        RESTIC (default restic; skipped when not installed), WORK (default a new directory
#        under /var/tmp, removed at the end unless KEEP=1)
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${SCALE:-40}
txns=${TXNS:-1000}
read -r -a sizes <<<"${SIZES:-16K 64K 256K}"
bin=${BUNKER_BIN:-target/release/bunker}
[ -x "$bin" ] || cargo build --release --locked -p bunker-cli --bin bunker
bin=$(realpath "$bin")
restic=${RESTIC:-restic}
command -v "$restic" >/dev/null || { echo "no restic: measuring bunker alone" >&2; restic=; }
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$pg_bin/pgbench" ] || { echo "PostgreSQL's server programs are not installed" >&2; exit 1; }

work=${WORK:-$(mktemp -d /var/tmp/bunker-pgdata.XXXXXX)}
mkdir -p "$work"
chmod 755 "$work"   # the postgres user reaches its directories through it
[ "${KEEP:-0}" = 1 ] || trap 'runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/data" stop -m immediate >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
export BUNKER_PASSWORD=bench RESTIC_PASSWORD=bench
data=$work/data
socket=$work/socket
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$data" "$socket"
chown postgres:postgres "$data" "$socket"
pg() { runuser -u postgres -- "$@"; }
pg "$pg_bin/initdb" -D "$data" -A trust -U postgres --no-sync >/dev/null
start() { pg "$pg_bin/pg_ctl" -D "$data" -o "-p $port -c listen_addresses= -k $socket" -w -l "$socket/server.log" start >/dev/null; }
stop() { pg "$pg_bin/pg_ctl" -D "$data" -w stop -m fast >/dev/null; }
start
pg "$pg_bin/pgbench" -i -q -s "$scale" -h "$socket" -p "$port" postgres 2>/dev/null
stop

wall() {  # COMMAND...: runs it, prints its wall seconds; on failure shows what it said
    if ! /usr/bin/time -o "$work/time" -f %e "$@" >/dev/null 2>"$work/stderr"; then
        echo "failed: $*" >&2; cat "$work/stderr" >&2; return 1
    fi
    cat "$work/time"
}
size() { du -sb "$1" | cut -f1; }
configs=(cdc)
for s in "${sizes[@]}"; do configs+=("fixed-$s"); done
[ -z "$restic" ] || configs+=(restic)
declare -A first_size first_wall
backup() {  # CONFIG: back up the data directory into CONFIG's repository; prints wall seconds
    local config=$1 repo=$work/repo-$1
    case $config in
      restic) wall "$restic" -r "$repo" --cache-dir "$work/cache-restic" backup -q "$data" ;;
      cdc) wall "$bin" -r "$repo" --cache-dir "$work/cache-$config" backup "$data" --json ;;
      fixed-*) wall "$bin" -r "$repo" --cache-dir "$work/cache-$config" backup "$data" --json --fixed-chunks "${config#fixed-}" ;;
    esac
}
added() {  # CONFIG: plaintext bytes the latest bunker backup added
    [ "$1" = restic ] && { echo -; return; }
    "$bin" -r "$work/repo-$1" snapshots --json --latest |
      python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["summary"]["bytes_added"])'
}
for config in "${configs[@]}"; do
  if [ "$config" = restic ]; then "$restic" -r "$work/repo-restic" init -q >/dev/null
  else "$bin" -r "$work/repo-$config" init >/dev/null; fi
  sync
  first_wall[$config]=$(backup "$config")
  first_size[$config]=$(size "$work/repo-$config")
done

cp -a "$data" "$work/before"
start
pg "$pg_bin/pgbench" -c 1 -t "$txns" -n -h "$socket" -p "$port" postgres >/dev/null 2>&1
pg "$pg_bin/psql" -q -h "$socket" -p "$port" -c CHECKPOINT postgres
stop
pages=$(python3 - "$work/before" "$data" <<'PY'
import os, sys
before, after = sys.argv[1:]
changed = total = 0
for root, _, files in os.walk(after):
    for name in files:
        path = os.path.join(root, name)
        old_path = os.path.join(before, os.path.relpath(path, after))
        with open(path, 'rb') as new:
            old = open(old_path, 'rb') if os.path.exists(old_path) else None
            while page := new.read(8192):
                total += 1
                if old is None or old.read(8192) != page:
                    changed += 1
            if old:
                old.close()
print(f"{changed} of {total} 8 KiB pages changed ({changed * 8192 / 2**20:.1f} MiB)")
PY
)
rm -rf "$work/before"
echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}'), pgbench scale $scale, $txns transactions: $(size "$data") bytes; $pages"
restore() {  # CONFIG: restores the latest snapshot into a new directory; prints wall seconds
    local config=$1 repo=$work/repo-$1 target=$work/restored
    rm -rf "$target"; sync
    case $config in
      restic) wall "$restic" -r "$repo" --cache-dir "$work/cache-restic" restore latest --target "$target" ;;
      *) wall "$bin" -r "$repo" --cache-dir "$work/cache-$config" restore latest --target "$target" ;;
    esac
    rm -rf "$target"
}
printf '%-12s %14s %10s %14s %16s %10s %10s\n' config first_bytes first_s growth_bytes plaintext_added second_s restore_s
for config in "${configs[@]}"; do
  sync
  second_wall=$(backup "$config")
  growth=$(( $(size "$work/repo-$config") - ${first_size[$config]} ))
  printf '%-12s %14s %10s %14s %16s %10s %10s\n' "$config" "${first_size[$config]}" "${first_wall[$config]}" \
    "$growth" "$(added "$config")" "$second_wall" "$(restore "$config")"
done
