#!/usr/bin/env bash
# Installs moto's S3-compatible test server (pinned, in a venv under target/) if missing and
# starts it on 127.0.0.1 on a free port. Prints the endpoint URL on stdout and the server's
# pid on the next line; the caller stops it. Idempotent and fast once installed.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/moto-venv
pins=("moto[server]==5.2.5" "boto3==1.44.5")
stamp="$venv/.bunker-pins"
if [ ! -x "$venv/bin/moto_server" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
    echo "installing ${pins[*]} into $venv" >&2
    mkdir -p target
    python3 -m venv "$venv" >&2 || {
        echo "python3 -m venv failed: install python3-venv" >&2
        exit 1
    }
    "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}" >&2
    echo "${pins[*]}" >"$stamp"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=target/moto-server.log
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then
        echo "http://127.0.0.1:$port"
        echo "$pid"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
echo "moto server did not start on port $port; its log ($log):" >&2
cat "$log" >&2
kill "$pid" 2>/dev/null || true
exit 1
