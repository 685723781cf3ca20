#!/usr/bin/env bash
# Crash campaign: proves that bunker never loses a committed snapshot and never leaves a
# repository that fails `check`, however abruptly its commands are interrupted. Not part of
# the default tests (README "Longer campaigns"); a round takes 5-20 s on two shared cores.
#
#   scripts/crash-loop.sh [ROUNDS] [WORKDIR]      (defaults: 40, target/crash-loop)
#
# Each round mutates a generated corpus (deterministic from SEED and the round), runs one
# scenario on a local repository and interrupts one of its commands with SIGKILL (sometimes
# SIGINT, SIGINT twice, or SIGTERM) after a random delay:
#   backup            one backup, killed, then run again
#   two-backups       two backups at once with different --host, one or both killed, re-run
#   forget-prune      forget --keep-last N then prune (or forget --prune; a signalled prune
#                     with --keep-audit 10m), one killed, re-run
#   prune-vs-backup   prune while a backup runs (after a forget half the time), one killed
#   two-prunes        two prunes at once (after a forget half the time), one killed, re-run
#   restore           a restore killed, then the same command again (it resumes), compared
# After every round: `check` exits 0; every snapshot listed before the round is still listed
# unless a forget of the round may have removed it by its --keep-last rule (a completed
# forget must have named it); every backup that exited 0 is listed; none that exited 130 is;
# no snapshot appears that no backup of the round wrote; the corpus did not change while the
# round ran. Every VERIFY_EVERY rounds and at the end: `check --read-data`, and restores of
# VERIFY_SNAPSHOTS snapshots (every snapshot at the end) compared byte for byte, mode, owner
# and mtime (ns) against the manifest recorded before the backups of their round.
#
# Knobs (environment):
#   BUNKER=PATH          the binary (default target/release/bunker, built if missing)
#   SEED=N               fixes the corpus and each round's plan (scenario, signal, delay as a
#                        fraction of the command's measured duration); the exact interleaving
#                        of the processes cannot be replayed, so rerun a failing seed a few times
#   VERIFY_EVERY=4       rounds between data checks and verification restores
#   VERIFY_SNAPSHOTS=3   snapshots restored and compared at each of those
#   SMALL_FILES=2000     small files in the initial corpus (plus 3 large files and a sparse one)
#   LARGE_MIB=24         largest size of a large file
#   CONCURRENT_GRACE=30s --grace of a prune that runs beside a backup (OPERATIONS.md §5: longer
#                        than any backup runs; a prune alone uses 0)
#   IDLE_MINUTES=16      after half the rounds, chosen by the plan, the repository's objects
#                        are made that much older (their mtimes, the storage's clock, moved
#                        back), as if it had sat idle: the heartbeats of killed commands lapse
#                        (FORMAT.md §14a, 15 minutes), so later prunes execute their plans and
#                        delete packs, under signals and beside backups; 0: never
#   S3=1                 the repository in a bucket of a local moto S3 server (started here
#                        with scripts/moto-server.sh, stopped at the end) instead of a
#                        directory; no idle gaps then (moto's clock cannot be moved back)
#   KEEP=1               keep the workdir after a successful campaign too
# On a violation it prints one line (round, SEED, reason), keeps the workdir and exits 1. On
# success it prints a summary and exits 0. Run it under `nice -n 10` on a shared machine.
# What each round ran is in WORKDIR/logs/NNNN/: `commands` (each bunker command, the signal
# and when, the exit code and when), `events` and `verdict` (the judge's input and output),
# and every command's stdout and stderr.
set -euo pipefail

rounds=${1:-40}
# Paths given by the caller are relative to where it runs, the defaults to the repository root.
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(realpath -m "${2:-$root/target/crash-loop}")
bunker=$(realpath -m "${BUNKER:-$root/target/release/bunker}")
seed=${SEED:-$(($(date +%s) % 100000))}
verify_every=${VERIFY_EVERY:-4}
verify_snapshots=${VERIFY_SNAPSHOTS:-3}
small_files=${SMALL_FILES:-2000}
large_mib=${LARGE_MIB:-24}
concurrent_grace=${CONCURRENT_GRACE:-30s}
idle_minutes=${IDLE_MINUTES:-16}
cd "$root"

[[ $rounds =~ ^[0-9]+$ && $seed =~ ^[0-9]+$ && $idle_minutes =~ ^[0-9]+$ ]] || { echo "usage: $0 [ROUNDS] [WORKDIR] (SEED a number)" >&2; exit 2; }
# EPOCHREALTIME (bash 5) times commands without a subprocess per measurement.
[[ -n ${EPOCHREALTIME:-} ]] || { echo "crash-loop: needs bash 5 or later" >&2; exit 2; }
if [[ ! -x $bunker ]]; then
    [[ -z ${BUNKER:-} ]] || { echo "crash-loop: no executable at BUNKER=$BUNKER" >&2; exit 2; }
    cargo build --release --locked -p bunker-cli
fi

# The workdir is wiped at start: refuse one this script did not make.
if [[ -e $work && -n $(ls -A "$work") && ! -e $work/.crash-loop ]]; then
    echo "crash-loop: $work exists and was not made by crash-loop; give another WORKDIR" >&2
    exit 2
fi
rm -rf "$work" && mkdir -p "$work"/{logs,manifests,cache,verify} && touch "$work/.crash-loop"
corpus=$work/corpus
tools=$work/tools.py
export BUNKER_REPOSITORY=$work/repo BUNKER_PASSWORD=crash-loop-password
export BUNKER_CACHE_DIR=$work/cache/maintenance BUNKER_AUDIT_LOG=$work/audit.jsonl
unset BUNKER_PASSWORD_FILE BUNKER_PASSWORD_COMMAND BUNKER_KEY_FILE BUNKER_POLICY
# A policy with restore roots would refuse the campaign's restore targets.
[[ ! -e /etc/bunker/agent.toml ]] || echo "crash-loop: warning: /etc/bunker/agent.toml applies to the restores" >&2

# The corpus generator, manifests, restore comparison and the per-round judge. Python keeps
# the bookkeeping readable; only the standard library is used.
cat >"$tools" <<'PY'
import hashlib, json, os, random, stat, sys

def walk(root):
    """Manifest of the tree under root: relative path -> what a restore must reproduce."""
    out = {}
    def add(rel, full):
        st = os.lstat(full)
        e = {"mode": st.st_mode, "mtime_ns": st.st_mtime_ns, "uid": st.st_uid, "gid": st.st_gid}
        if stat.S_ISREG(st.st_mode):
            h = hashlib.sha256()
            with open(full, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            e["size"], e["hash"] = st.st_size, h.hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            e["target"] = os.readlink(full)
        out[rel] = e
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(full)):
                add(name if rel == "." else rel + "/" + name, os.path.join(full, name))
    add(".", root)
    return out

WORDS = ("backup restore chunk pack index snapshot tree blob seal prune forget check repair "
         "the of and to in is for on with as by at from deduplicate encrypt compress").split()
TEXT = " ".join(random.Random(0).choices(WORDS, k=200000)).encode()

def content(r, n):
    """n bytes, a mix of text (compressible), random bytes and short repeats."""
    kind = r.random()
    if kind < 0.5:
        off = r.randrange(len(TEXT) - n) if n < len(TEXT) else 0
        return (TEXT[off:off + n] + r.randbytes(max(0, n - len(TEXT))))[:n]
    if kind < 0.85:
        return r.randbytes(n)
    return (r.randbytes(r.randint(1, 64)) * (n // 2 + 1))[:n]

def small_size(r):
    x = r.random()
    return r.randint(0, 1024) if x < 0.6 else r.randint(1024, 16384) if x < 0.9 else r.randint(16384, 131072)

def write(path, data, mode=None):
    if os.path.exists(path):
        os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)

def files(root, sub=None):
    """Regular files (relative), sorted, outside big/ unless sub names it."""
    out = []
    for d, dirs, names in os.walk(os.path.join(root, sub) if sub else root):
        dirs.sort()
        rel = os.path.relpath(d, root)
        if sub is None and rel.split("/")[0] == "big":
            continue
        out += [os.path.normpath(os.path.join(rel, n)) for n in sorted(names)
                if os.path.isfile(os.path.join(d, n)) and not os.path.islink(os.path.join(d, n))]
    return out

def dirs(root):
    out = []
    for d, ds, _ in os.walk(root):
        ds.sort()
        rel = os.path.relpath(d, root)
        if rel != "." and rel.split("/")[0] != "big":
            out.append(rel)
    return out

def new_dir(root, r):
    rel = "d%02d" % r.randrange(24) + ("/s%d" % r.randrange(5) if r.random() < 0.7 else "")
    os.makedirs(os.path.join(root, rel), exist_ok=True)
    return rel

def old_time(r):
    return r.randrange(978307200, 1577836800) * 10**9 + r.randrange(10**9)

def new_small(root, r, d=None):
    d = d or new_dir(root, r)
    path = os.path.join(root, d, "f%06d.%s" % (r.randrange(10**6), r.choice(["txt", "bin", "dat", "log"])))
    write(path, content(r, small_size(r)), r.choice([0o644] * 6 + [0o600, 0o755, 0o444]))
    if r.random() < 0.2:
        t = old_time(r)
        os.utime(path, ns=(t, t))

def write_large(r, path, size):
    # Runs of repeated 1 MiB pieces give the chunker something to deduplicate within a file.
    pieces = [content(r, 1 << 20) for _ in range(4)]
    data = b"".join(r.choice(pieces) if r.random() < 0.3 else r.randbytes(1 << 20)
                    for _ in range(size >> 20))
    write(path, data + r.randbytes(size & ((1 << 20) - 1)))

def create(root, r, n_small, large_mib):
    os.makedirs(os.path.join(root, "big"), exist_ok=True)
    for _ in range(n_small):
        new_small(root, r)
    for i in range(3):
        write_large(r, os.path.join(root, "big", "large-%d.bin" % i), r.randint(4 << 20, large_mib << 20))
    sparse = os.path.join(root, "big", "sparse.img")
    with open(sparse, "wb") as f:
        f.truncate(32 << 20)
    for i in range(8):
        island(r, sparse)
    for i in range(12):
        make_link(root, r)
    os.makedirs(os.path.join(root, "empty-dir", "deeper"), exist_ok=True)
    write(os.path.join(root, "empty-file"), b"")
    for d in r.sample(dirs(root), 4):
        os.chmod(os.path.join(root, d), r.choice([0o750, 0o700, 0o775]))

def island(r, path):
    with open(path, "r+b") as f:
        f.seek(r.randrange(32 << 20) & ~4095)
        f.write(r.randbytes(r.randint(1, 256) << 10))

def make_link(root, r):
    fs = files(root)
    d = new_dir(root, r)
    link = os.path.join(root, d, "link%04d" % r.randrange(10000))
    if os.path.lexists(link) or os.path.isdir(link):
        return
    target = os.path.relpath(os.path.join(root, r.choice(fs)), os.path.join(root, d)) if r.random() < 0.9 else "dangling/nowhere"
    os.symlink(target, link)
    if r.random() < 0.5:
        t = old_time(r)
        os.utime(link, ns=(t, t), follow_symlinks=False)

def mutate(root, r, n_small, large_mib):
    fs = files(root)
    n = len(fs)
    for rel in r.sample(fs, min(n, max(1, int(n * r.uniform(0.005, 0.03))))):   # edits
        p = os.path.join(root, rel)
        mode = stat.S_IMODE(os.stat(p).st_mode)
        os.chmod(p, 0o644)
        op = r.random()
        with open(p, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            if op < 0.4:
                f.seek(0, 2); f.write(content(r, r.randint(1, 4096)))
            elif op < 0.7 and size:
                f.seek(r.randrange(size)); f.write(r.randbytes(r.randint(1, 512)))
            elif op < 0.85:
                f.truncate(r.randrange(size + 1))
            else:
                f.truncate(0); f.write(content(r, small_size(r)))
        os.chmod(p, mode)
    for _ in range(int(n * r.uniform(0.005, 0.03))):                              # new files
        new_small(root, r)
    # Deletes; more once the corpus outgrows its size, so that rounds stay about as long.
    extra = max(0, n - int(n_small * 1.2)) // 3
    for rel in r.sample(fs, min(n, int(n * r.uniform(0, 0.015)) + extra)):
        if os.path.exists(os.path.join(root, rel)):
            os.unlink(os.path.join(root, rel))
    fs = files(root)
    for rel in r.sample(fs, min(len(fs), int(len(fs) * r.uniform(0, 0.015)))):   # renames
        dst = os.path.join(new_dir(root, r), "r%06d-%s" % (r.randrange(10**6), os.path.basename(rel)))
        if os.path.exists(os.path.join(root, rel)) and not os.path.lexists(os.path.join(root, dst)):
            os.rename(os.path.join(root, rel), os.path.join(root, dst))
    fs = files(root)
    for rel in r.sample(fs, min(len(fs), 3)):                                    # metadata only
        p = os.path.join(root, rel)
        if r.random() < 0.5:
            os.chmod(p, r.choice([0o644, 0o600, 0o640, 0o755, 0o444]))
        else:
            t = old_time(r)
            os.utime(p, ns=(t, t))
    if r.random() < 0.2:                                                         # a directory moves
        ds = [d for d in dirs(root) if d.count("/") == 1]
        if ds:
            src = r.choice(ds)
            dst = "d%02d/moved%04d" % (r.randrange(24), r.randrange(10000))
            if not os.path.lexists(os.path.join(root, dst)) and not dst.startswith(src + "/"):
                os.makedirs(os.path.dirname(os.path.join(root, dst)), exist_ok=True)
                os.rename(os.path.join(root, src), os.path.join(root, dst))
    bursts = sorted(x for x in os.listdir(root) if x.startswith("burst"))
    if r.random() < 0.08:                                                        # a burst
        d = "burst%04d" % r.randrange(10000)
        os.makedirs(os.path.join(root, d), exist_ok=True)
        for _ in range(r.randint(100, 400)):
            new_small(root, r, d)
    elif r.random() < 0.2:
        if bursts:
            gone = os.path.join(root, r.choice(bursts))
            for d, _, names in os.walk(gone):
                os.chmod(d, 0o755)
            import shutil; shutil.rmtree(gone)
    if r.random() < 0.3:
        make_link(root, r)
    large = [os.path.join(root, x) for x in files(root, "big") if "large" in x]
    op = r.random()
    if op < 0.45:                                                                # large: edit in place
        p = r.choice(large)
        size = os.path.getsize(p)
        with open(p, "r+b") as f:
            f.seek(r.randrange(size)); f.write(r.randbytes(r.randint(64 << 10, 2 << 20)))
    elif op < 0.6:                                                               # insert: shifts chunks
        p = r.choice(large)
        with open(p, "rb") as f:
            data = f.read()
        at = r.randrange(len(data))
        write(p, data[:at] + r.randbytes(r.randint(1, 100000)) + data[at:])
    elif op < 0.7:
        with open(r.choice(large), "ab") as f:
            f.write(r.randbytes(r.randint(1, 3 << 20)))
    elif op < 0.8 or len(large) < 2:                                             # a new one
        write_large(r, os.path.join(root, "big", "large-%d.bin" % r.randrange(1000)), r.randint(4 << 20, large_mib << 20))
    elif op < 0.9:
        p = r.choice(large)
        os.rename(p, os.path.join(root, "big", "large-%d.bin" % r.randrange(1000)))
    large = [os.path.join(root, x) for x in files(root, "big") if "large" in x]
    while len(large) > 4:
        os.unlink(large.pop(r.randrange(len(large))))
    if r.random() < 0.3:
        island(r, os.path.join(root, "big", "sparse.img"))

def snaps(path):
    with open(path) as f:
        return {s["id"]: s for s in json.load(f)}

def when(s):
    """RFC 3339 time as (seconds text, nanoseconds): fractions need not have 9 digits."""
    t = s["time"].rstrip("Z")
    whole, _, frac = t.partition(".")
    return (whole, int((frac + "000000000")[:9]))

def tag(s, key):
    for t in s.get("tags") or []:
        if t.startswith(key + "="):
            return t.split("=", 1)[1]
    return None

def json_docs(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{") or line.startswith("["):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out

def judge(pre_path, post_path, events_path):
    """Exit 1 with one line if the round broke a promise; else print counts."""
    pre, post = snaps(pre_path), snaps(post_path)
    backups, forgets = {}, []
    with open(events_path) as f:
        for line in f:
            w = line.split()
            if w[0] == "backup":
                backups[w[1]] = {"rc": int(w[2]), "id": w[3], "signal": w[4]}
            elif w[0] == "forget":
                forgets.append({"keep": int(w[1]), "rc": int(w[2]), "out": w[3]})
    def bad(msg):
        print(msg); sys.exit(1)
    def group(s):
        return (s["host"], tuple(sorted(s["paths"])))
    known = dict(pre); known.update(post)
    def newer(s):
        return sum(1 for t in known.values() if group(t) == group(s) and when(t) > when(s))
    removed = set()
    for fg in forgets:
        if fg["rc"] != 0:
            continue
        docs = json_docs(fg["out"])
        for g in (docs[0] if docs and isinstance(docs[0], list) else []):
            for s in g["snapshots"]:
                if not s["keep"]:
                    removed.add(s["id"])
                    if s["id"] in known and newer(known[s["id"]]) < fg["keep"]:
                        bad("forget --keep-last %d removed %s, which has only %d newer snapshots in its group"
                            % (fg["keep"], s["id"][:8], newer(known[s["id"]])))
                elif s["id"] not in post:
                    bad("snapshot %s vanished although a completed forget kept it" % s["id"][:8])
    killed_keep = [fg["keep"] for fg in forgets if fg["rc"] != 0]
    for sid, s in sorted(pre.items(), key=lambda kv: when(kv[1])):
        if sid in post or sid in removed:
            continue
        if killed_keep and newer(s) >= min(killed_keep):
            continue    # an interrupted forget may have removed it by its rule
        why = "no forget ran" if not forgets else "its group has %d newer snapshots" % newer(s)
        bad("committed snapshot %s (host %s, %s) is no longer listed: %s" % (sid[:8], s["host"], s["time"], why))
    by_run = {}
    for sid, s in post.items():
        if sid not in pre:
            run = tag(s, "run")
            if run not in backups:
                bad("snapshot %s appeared that no backup of this round wrote (tags %s)" % (sid[:8], s.get("tags")))
            by_run.setdefault(run, []).append(sid)
    late = 0
    for run, b in backups.items():
        got = by_run.get(run, [])
        if len(got) > 1:
            bad("backup run=%s committed %d snapshots" % (run, len(got)))
        if b["rc"] == 0 and got != [b["id"]]:
            bad("backup run=%s exited 0 with snapshot %s, but the listing has %s" % (run, b["id"][:8], got or "none"))
        if b["rc"] == 130 and got:
            bad("backup run=%s exited 130 (interrupted by SIG%s) but committed snapshot %s" % (run, b["signal"], got[0][:8]))
        if b["rc"] not in (0, 130) and got:
            late += 1
    # committed, forgotten, killed by SIGKILL but committed
    print("%d %d %d" % (
        sum(1 for sid in post if sid not in pre), sum(1 for sid in pre if sid not in post), late))

def compare(manifest, root):
    with open(manifest) as f:
        want = json.load(f)
    got = walk(root)
    problems = []
    for p in sorted(set(want) | set(got)):
        if p not in got:
            problems.append("missing " + p)
        elif p not in want:
            problems.append("extra " + p)
        else:
            for k in sorted(set(want[p]) | set(got[p])):
                if want[p].get(k) != got[p].get(k):
                    problems.append("%s: %s %r != %r" % (p, k, want[p].get(k), got[p].get(k)))
    if problems:
        print("%d differences, e.g. %s" % (len(problems), "; ".join(problems[:3])))
        sys.exit(1)
    print(sum(e.get("size", 0) for e in want.values()))

def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "mutate":                    # CORPUS SEED ROUND SMALL LARGE_MIB
        r = random.Random("%s/%s" % (args[1], args[2]))
        if args[2] == "0":
            create(args[0], r, int(args[3]), int(args[4]))
        else:
            mutate(args[0], r, int(args[3]), int(args[4]))
    elif cmd == "manifest":                # ROOT OUT
        with open(args[1], "w") as f:
            json.dump(walk(args[0]), f, sort_keys=True)
    elif cmd == "compare":                 # MANIFEST ROOT
        compare(args[0], args[1])
    elif cmd == "judge":                   # PRE POST EVENTS
        judge(*args)
    elif cmd == "field":                   # FILE KEY: KEY of the last JSON document with it
        v = [d[args[1]] for d in json_docs(args[0]) if isinstance(d, dict) and args[1] in d]
        print(v[-1] if v else "-")
    elif cmd == "list":                    # SNAPSHOTS-JSON: "id round" per snapshot, oldest first
        for s in sorted(snaps(args[0]).values(), key=when):
            print(s["id"], tag(s, "round") or "-")
    elif cmd == "age":                     # ROOT SECONDS: every file's times moved back
        back = int(args[1]) * 10**9
        for top, _, files in os.walk(args[0]):
            for name in files:
                path = os.path.join(top, name)
                st = os.lstat(path)
                os.utime(path, ns=(st.st_atime_ns - back, st.st_mtime_ns - back), follow_symlinks=False)
    elif cmd == "prunestats":              # FILE: deleted packs, plans executed, plans waiting, audit records removed
        d = [x for x in json_docs(args[0]) if isinstance(x, dict) and "report" in x]
        if d:
            print(d[-1]["report"]["deleted_packs"], d[-1]["report"]["plans_executed"],
                  len(d[-1]["plan"].get("waiting_plans", [])),
                  d[-1]["report"].get("audit_records_removed", 0))
        else:
            print(0, 0, 0, 0)

main()
PY

moto_pid=
declare -A pid=() sub=() took=() live=() rc=() started=() delay=() dur=() count=() runtag=() verified=()
round=0
status=running

cleanup() {
    local code=$? name p
    # Only the processes this script started, by id: bunker (while its subshell is its
    # parent), then the subshells.
    for name in "${!pid[@]}"; do
        if ours "$name"; then kill -s KILL "${pid[$name]}" 2>/dev/null || true; fi
    done
    for p in "${!live[@]}"; do kill -s KILL "$p" 2>/dev/null || true; done
    [[ -z $moto_pid ]] || kill "$moto_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    if [[ $status == running && $code -ne 0 ]]; then
        echo "crash-loop: stopped in round $round (SEED=$seed) by an error of the script itself or a signal (exit $code); workdir kept: $work" >&2
    fi
}
trap cleanup EXIT
if [[ -n ${S3:-} ]]; then
    server=$(scripts/moto-server.sh)
    moto_pid=$(sed -n 2p <<<"$server")
    export AWS_ENDPOINT_URL=$(sed -n 1p <<<"$server") AWS_REGION=us-east-1
    export AWS_ACCESS_KEY_ID=crash-loop AWS_SECRET_ACCESS_KEY=crash-loop
    unset AWS_SESSION_TOKEN AWS_PROFILE
    # moto accepts an unsigned CreateBucket.
    curl -fsS -X PUT "$AWS_ENDPOINT_URL/crash-loop" >/dev/null
    export BUNKER_REPOSITORY=s3://crash-loop/repo
    idle_minutes=0
fi
trap 'exit 130' INT TERM

inc() { count[$1]=$((${count[$1]:-0} + ${2:-1})); }
now_ms() { REPLY=$((${EPOCHREALTIME/./} / 1000)); }
rand() { REPLY=$((RANDOM % $1)); }     # 0 .. $1-1, in this shell so the sequence stays seeded
sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
py() { python3 "$tools" "$@"; }
err_tail() { tail -n 3 "$rdir/$1.err" 2>/dev/null | tr '\n' ' ' | cut -c1-400; }

violation() {
    status=violation
    echo "crash-loop: VIOLATION in round $round (SEED=$seed): $*; workdir kept: $work" >&2
    exit 1
}

# run_bg NAME ARGS...: bunker ARGS in the background, output in the round's log directory.
# A non-interactive bash starts background jobs with SIGINT ignored, which bunker would keep
# until it installs its own handler; `env --default-signal` gives it the default a terminal's
# child has. A subshell waits for bunker and exits with its code, so bash prints no "Killed"
# notices; bunker's pid is read from a file.
run_bg() {
    local name=$1 pidfile=$rdir/$1.pid
    shift
    now_ms
    started[$name]=$REPLY
    (
        env --default-signal=INT,TERM "$bunker" "$@" >"$rdir/$name.out" 2>"$rdir/$name.err" &
        echo "$!" >"$pidfile"
        r=0
        wait "$!" || r=$?
        # When it ended, for the time it took to stop after a signal.
        echo "${EPOCHREALTIME/./}" >"$rdir/$name.end"
        exit "$r"
    ) 2>/dev/null &
    sub[$name]=$!
    live[$!]=1
    until [[ -s $pidfile ]]; do sleep 0.002; done
    pid[$name]=$(<"$pidfile")
    echo "$name: bunker $*" >>"$rdir/commands"
}

# ours NAME: bunker of NAME still runs (or is a zombie not yet reaped): its parent is still
# our subshell, so a signal cannot reach a process that reused the pid.
ours() {
    local st
    { read -r -a st <"/proc/${pid[$1]}/stat"; } 2>/dev/null || return 1
    [[ ${st[3]} == "${sub[$1]}" ]]
}

wait_for() {
    local r=0
    wait "${sub[$1]}" || r=$?
    unset "live[${sub[$1]}]"
    rc[$1]=$r
    REPLY=$(($(<"$rdir/$1.end") / 1000 - ${started[$1]}))
    took[$1]=$REPLY
    echo "$1: exit $r after ${REPLY} ms" >>"$rdir/commands"
}

# run NAME ARGS...: bunker ARGS to its end; it must exit 0. KIND's duration is remembered to
# place later signals.
run_ok() {
    local name=$1 kind=$2
    shift 2
    run_bg "$name" "$@"
    wait_for "$name"
    ((rc[$name] == 0)) || violation "bunker $* exited ${rc[$name]}: $(err_tail "$name")"
    dur[$kind]=$REPLY
}

# plan_signal KIND: choose the signal and the delay (as a share of KIND's last duration;
# a tenth of them very early, some after the command will have ended).
plan_signal() {
    local d=${dur[$1]:-400} f
    rand 20
    case $REPLY in
        0 | 1 | 2 | 3) sig=INT ;;
        4 | 5 | 6) sig=TERM ;;
        7) sig=INT2 ;;
        *) sig=KILL ;;
    esac
    rand 10
    if ((REPLY == 0)); then rand 50; else rand 1300; fi
    f=$REPLY
    wait_ms=$((d * f / 1000))
}

# signal NAME SIG: send it now (INT2: SIGINT, and a second one 20 ms later).
signal() {
    local p=${pid[$1]}
    now_ms
    delay[$1]=$((REPLY - ${started[$1]}))
    echo "$1: SIG$2 after ${delay[$1]} ms" >>"$rdir/commands"
    if [[ $2 == INT2 ]]; then
        if ours "$1"; then kill -s INT "$p" 2>/dev/null || true; fi
        sleep 0.02
        if ours "$1"; then kill -s INT "$p" 2>/dev/null || true; fi
    elif ours "$1"; then
        kill -s "$2" "$p" 2>/dev/null || true
    fi
}

# judge_signalled NAME KIND SIG: the exit code of a command that got SIG must be 0 (it ended
# first) or the documented one: 130 for SIGINT/SIGTERM (OPERATIONS.md §6), 137 for SIGKILL.
# Returns 0 when the signal interrupted it.
judge_signalled() {
    local name=$1 kind=$2 sig=$3 code=${rc[$1]}
    if ((code == 0)); then
        inc "miss:$kind"
        return 1
    fi
    case $sig:$code in
        KILL:137) ;;
        INT:130 | INT2:130 | TERM:130)
            # How long the command took to reach its safe point after the signal.
            local late=$((${took[$name]} - ${delay[$name]}))
            if ((late > ${count[stop_ms:$kind]:-0})); then count[stop_ms:$kind]=$late; fi
            ;;
        TERM:143)
            # Killed by the default action: the signal came before bunker installed its handler.
            inc notes
            echo "crash-loop: note, round $round: $kind got SIGTERM after ${delay[$name]} ms and died of it (exit 143) instead of exiting 130" >&2
            ;;
        *) violation "$kind ($name) got SIG$sig after ${delay[$name]} ms and exited $code (expected 0 or $([[ $sig == KILL ]] && echo 137 || echo 130)): $(err_tail "$name")" ;;
    esac
    inc "kill:$kind:$sig"
    return 0
}

# start_backup NAME HOST [ARGS...]: a backup of the corpus as HOST, tagged with its round
# (which manifest it must match) and its run (which command wrote it). Each host has its own
# files cache, as separate machines would.
start_backup() {
    local name=$1 host=$2
    shift 2
    inc runs
    runtag[$name]=$round.${count[runs]}
    run_bg "$name" backup "$corpus" --host "$host" --tag "round=$round" --tag "run=${runtag[$name]}" \
        --cache-dir "$work/cache/$host" --json "$@"
}

record_backup() {
    local id=-
    ((rc[$1] != 0)) || id=$(py field "$rdir/$1.out" snapshot_id)
    echo "backup ${runtag[$1]} ${rc[$1]} $id ${2:--}" >>"$rdir/events"
}

# rerun_backup NAME HOST: after an interrupted backup the next one must succeed.
rerun_backup() {
    start_backup "$1" "$2"
    wait_for "$1"
    ((rc[$1] == 0)) || violation "backup re-run after an interrupted backup exited ${rc[$1]}: $(err_tail "$1")"
    inc reruns:backup
    record_backup "$1"
}

prune_stats() {
    local deleted plans waiting audit
    read -r deleted plans waiting audit < <(py prunestats "$rdir/$1.out")
    inc pruned_packs "$deleted"
    inc plans_executed "$plans"
    inc plans_waiting "$waiting"
    inc audit_removed "$audit"
}

pick_host() {
    rand 2
    host=host-$((REPLY == 0 ? 1 : 2))
}

no_cache_args() {
    extra=()
    rand 10
    if ((REPLY < 3)); then extra=(--no-cache); fi
}

scenario_backup() {
    local kind
    pick_host
    no_cache_args
    kind=backup${extra[0]:-}
    plan_signal "$kind"
    start_backup b "$host" "${extra[@]}"
    sleep_ms "$wait_ms"
    signal b "$sig"
    wait_for b
    if judge_signalled b backup "$sig"; then
        record_backup b "$sig"
        rerun_backup b2 "$host"
    else
        dur[$kind]=$REPLY
        record_backup b
    fi
    what="backup $host${extra[0]:+ ${extra[0]}} SIG$sig@${delay[b]}ms->${rc[b]}"
}

scenario_two_backups() {
    local victims
    no_cache_args
    plan_signal "backup${extra[0]:-}"
    start_backup b1 host-1 "${extra[@]}"
    start_backup b2 host-2 "${extra[@]}"
    rand 5
    case $REPLY in 0) victims="b1 b2" ;; 1 | 2) victims=b1 ;; *) victims=b2 ;; esac
    sleep_ms "$wait_ms"
    for v in $victims; do signal "$v" "$sig"; done
    what="two-backups${extra[0]:+ ${extra[0]}}"
    wait_for b1
    wait_for b2
    for v in b1 b2; do
        local host=host-${v#b}
        if [[ " $victims " == *" $v "* ]]; then
            what+=" $v:SIG$sig@${delay[$v]}ms->${rc[$v]}"
            if judge_signalled "$v" backup "$sig"; then
                record_backup "$v" "$sig"
                rerun_backup "$v-rerun" "$host"
                continue
            fi
        else
            what+=" $v->${rc[$v]}"
            ((rc[$v] == 0)) || violation "backup $v beside an interrupted one exited ${rc[$v]}: $(err_tail "$v")"
        fi
        record_backup "$v"
    done
}

scenario_forget_prune() {
    local keep cmd
    rand 3
    keep=$((REPLY + 2))
    rand 10
    if ((REPLY < 3)); then
        # forget --prune in one command, interrupted anywhere in either half.
        plan_signal forget-prune
        run_bg fp forget --keep-last "$keep" --prune --grace 0 --json
        sleep_ms "$wait_ms"
        signal fp "$sig"
        wait_for fp
        what="forget --keep-last $keep --prune SIG$sig@${delay[fp]}ms->${rc[fp]}"
        echo "forget $keep ${rc[fp]} $rdir/fp.out" >>"$rdir/events"
        if judge_signalled fp forget-prune "$sig"; then
            run_ok fp2 forget-prune forget --keep-last "$keep" --prune --grace 0 --json
            inc reruns:forget-prune
            echo "forget $keep 0 $rdir/fp2.out" >>"$rdir/events"
            prune_stats fp2
        else
            dur[forget-prune]=$REPLY
            prune_stats fp
        fi
        return
    fi
    rand 10
    if ((REPLY < 3)); then cmd=forget; else cmd=prune; fi
    if [[ $cmd == forget ]]; then
        plan_signal forget
        run_bg f forget --keep-last "$keep" --json
        sleep_ms "$wait_ms"
        signal f "$sig"
        wait_for f
        echo "forget $keep ${rc[f]} $rdir/f.out" >>"$rdir/events"
        what="forget --keep-last $keep SIG$sig@${delay[f]}ms->${rc[f]}, prune"
        if judge_signalled f forget "$sig"; then
            run_ok f2 forget forget --keep-last "$keep" --json
            inc reruns:forget
            echo "forget $keep 0 $rdir/f2.out" >>"$rdir/events"
        else
            dur[forget]=$REPLY
        fi
        run_ok p prune prune --grace 0 --json
        prune_stats p
    else
        run_ok f forget forget --keep-last "$keep" --json
        echo "forget $keep 0 $rdir/f.out" >>"$rdir/events"
        plan_signal prune
        # Audit records older than 10 minutes (those from before an idle gap) go too.
        run_bg p prune --grace 0 --keep-audit 10m --json
        sleep_ms "$wait_ms"
        signal p "$sig"
        wait_for p
        what="forget --keep-last $keep, prune SIG$sig@${delay[p]}ms->${rc[p]}"
        if judge_signalled p prune "$sig"; then
            # An interrupted prune is safe to rerun (OPERATIONS.md §5).
            run_ok p2 prune prune --grace 0 --keep-audit 10m --json
            inc reruns:prune
            prune_stats p2
        else
            dur[prune]=$REPLY
            prune_stats p
        fi
    fi
}

# Half the time, forget --keep-last 2..4 before the scenario's prunes: sets the caller's
# local `keep` to N, or leaves it empty.
maybe_forget() {
    rand 2
    ((REPLY == 0)) || return 0
    rand 3
    keep=$((REPLY + 2))
    run_ok f forget forget --keep-last "$keep" --json
    echo "forget $keep 0 $rdir/f.out" >>"$rdir/events"
}

scenario_prune_vs_backup() {
    local victim keep offset
    maybe_forget
    pick_host
    no_cache_args
    rand 2
    if ((REPLY == 0)); then victim=b; else victim=p; fi
    # The prune starts somewhere in the first half of the backup.
    rand 500
    offset=$((${dur[backup${extra[0]:-}]:-400} * REPLY / 1000))
    plan_signal "$([[ $victim == b ]] && echo "backup${extra[0]:-}" || echo prune)"
    start_backup b "$host" "${extra[@]}"
    sleep_ms "$offset"
    run_bg p prune --grace "$concurrent_grace" --json
    if [[ $victim == b ]]; then
        # Signal the backup at its planned time after its own start.
        if ((wait_ms > offset)); then sleep_ms $((wait_ms - offset)); fi
    else
        sleep_ms "$wait_ms"
    fi
    signal "$victim" "$sig"
    wait_for b
    wait_for p
    what="prune-vs-backup${keep:+ (forget --keep-last $keep)} $host${extra[0]:+ ${extra[0]}} prune@+${offset}ms $victim:SIG$sig@${delay[$victim]}ms b->${rc[b]} p->${rc[p]}"
    if [[ $victim == b ]]; then
        ((rc[p] == 0)) || violation "prune beside an interrupted backup exited ${rc[p]}: $(err_tail p)"
        prune_stats p
        if judge_signalled b backup "$sig"; then
            record_backup b "$sig"
            rerun_backup b2 "$host"
        else
            record_backup b
        fi
    else
        ((rc[b] == 0)) || violation "backup beside an interrupted prune exited ${rc[b]}: $(err_tail b)"
        record_backup b
        if judge_signalled p prune "$sig"; then
            run_ok p2 prune prune --grace 0 --json
            inc reruns:prune
            prune_stats p2
        else
            prune_stats p
        fi
    fi
}

# Two prunes at once (after a forget half the time), one of them signalled: both may execute
# the same due plans, delete the same packs and rewrite the same index segments, and neither
# may take what the other keeps.
scenario_two_prunes() {
    local keep victim offset other
    maybe_forget
    rand 2
    if ((REPLY == 0)); then victim=p1 other=p2; else victim=p2 other=p1; fi
    rand 300
    offset=$REPLY
    plan_signal prune
    run_bg p1 prune --grace 0 --json
    sleep_ms "$offset"
    run_bg p2 prune --grace 0 --json
    sleep_ms "$wait_ms"
    signal "$victim" "$sig"
    wait_for p1
    wait_for p2
    what="two-prunes${keep:+ (forget --keep-last $keep)} p2@+${offset}ms $victim:SIG$sig@${delay[$victim]}ms p1->${rc[p1]} p2->${rc[p2]}"
    ((rc[$other] == 0)) || violation "prune beside another prune exited ${rc[$other]}: $(err_tail "$other")"
    prune_stats "$other"
    if judge_signalled "$victim" prune "$sig"; then
        run_ok p3 prune prune --grace 0 --json
        inc reruns:prune
        prune_stats p3
    else
        prune_stats "$victim"
    fi
}

# restore_and_compare NAME ID ROUND TARGET: restored tree under TARGET must match ROUND's
# manifest; counts the bytes.
compare_restore() {
    local out
    out=$(py compare "$work/manifests/$3.json" "$4$corpus") ||
        violation "restore of snapshot ${2:0:8} (round $3) differs from the corpus it backed up: $out"
    inc bytes_restored "$out"
    inc snapshots_verified
    verified[$2]=1
}

scenario_restore() {
    local ids id snap_round target skipped
    mapfile -t ids < <(py list "$rdir/pre.json")
    rand "${#ids[@]}"
    read -r id snap_round <<<"${ids[$REPLY]}"
    target=$work/verify/r$round
    plan_signal restore
    run_bg r restore "$id" --target "$target" --json
    sleep_ms "$wait_ms"
    signal r "$sig"
    wait_for r
    what="restore ${id:0:8} SIG$sig@${delay[r]}ms->${rc[r]}"
    if judge_signalled r restore "$sig"; then
        # Running the same command again finishes the restore (OPERATIONS.md §9).
        run_ok r2 restore restore "$id" --target "$target" --json
        inc reruns:restore
        skipped=$(py field "$rdir/r2.out" files_skipped)
        what+=", re-run skipped $skipped files"
        [[ $skipped == - || $skipped == 0 ]] || inc resumed_restores
    else
        dur[restore]=$REPLY
    fi
    compare_restore r "$id" "$snap_round" "$target"
    rm -rf "$target"
}

# verify_snapshots N POST-JSON: check --read-data, then restore N snapshots (the newest, the
# oldest, then ones not verified yet) and compare each with its round's manifest.
verify_snapshots() {
    local n=$1 ids line id snap_round chosen=() i
    run_ok verify-check check check --read-data
    inc data_checks
    mapfile -t ids < <(py list "$2")
    if ((n >= ${#ids[@]})); then
        chosen=("${ids[@]}")
    else
        chosen=("${ids[-1]}" "${ids[0]}")
        for line in "${ids[@]}"; do
            ((${#chosen[@]} < n)) || break
            [[ -n ${verified[${line%% *}]:-} || $line == "${ids[0]}" || $line == "${ids[-1]}" ]] || chosen+=("$line")
        done
        while ((${#chosen[@]} < n)); do
            rand "${#ids[@]}"
            chosen+=("${ids[$REPLY]}")
        done
    fi
    i=0
    for line in "${chosen[@]}"; do
        read -r id snap_round <<<"$line"
        i=$((i + 1))
        run_ok "verify-$i" restore restore "$id" --target "$work/verify/v" --json
        compare_restore "verify-$i" "$id" "$snap_round" "$work/verify/v"
        rm -rf "$work/verify/v"
    done
}

now_ms
t_start=$REPLY
echo "crash-loop: SEED=$seed rounds=$rounds workdir=$work bunker=$bunker"
rdir=$work/logs/0000
mkdir -p "$rdir"
# A cheap key derivation: every command opens the repository, and the campaign is about
# crashes, not key stretching.
"$bunker" init --kdf-memory-kib 8192 --kdf-iterations 1 >"$rdir/init.out"
py mutate "$corpus" "$seed" 0 "$small_files" "$large_mib"
py manifest "$corpus" "$work/manifests/0.json"
: >"$rdir/events"
for host in host-1 host-2; do
    run_ok "first-$host" backup backup "$corpus" --host "$host" --tag round=0 --tag "run=0.$host" \
        --cache-dir "$work/cache/$host" --json
done
echo "crash-loop: corpus $(du -sh "$corpus" | cut -f1), $(find "$corpus" | wc -l) entries"

for ((round = 1; round <= rounds; round++)); do
    RANDOM=$((seed * 100003 + round))
    rdir=$work/logs/$(printf %04d "$round")
    mkdir -p "$rdir"
    : >"$rdir/events"
    py mutate "$corpus" "$seed" "$round" "$small_files" "$large_mib"
    # The manifest is taken before the round's backups, and the corpus stays as it is until
    # the round ends (checked below), so it describes every snapshot tagged with this round.
    py manifest "$corpus" "$work/manifests/$round.json"
    run_ok pre snapshots snapshots --json
    cp "$rdir/pre.out" "$rdir/pre.json"
    rand 22
    case $REPLY in
        0 | 1 | 2 | 3 | 4 | 5) scenario=backup ;;
        6 | 7 | 8) scenario=two_backups ;;
        9 | 10 | 11 | 12) scenario=forget_prune ;;
        13 | 14 | 15) scenario=prune_vs_backup ;;
        16 | 17) scenario=two_prunes ;;
        *) scenario=restore ;;
    esac
    what=
    "scenario_$scenario"
    inc "scenario:$scenario"

    run_bg check check
    wait_for check
    ((rc[check] == 0)) || violation "check exited ${rc[check]} after: $what: $(err_tail check)"
    run_ok post snapshots snapshots --json
    cp "$rdir/post.out" "$rdir/post.json"
    verdict=$(py judge "$rdir/pre.json" "$rdir/post.json" "$rdir/events") || violation "$verdict (after: $what)"
    echo "$verdict" >"$rdir/verdict"
    read -r c_committed c_forgotten c_late <<<"$verdict"
    inc committed "$c_committed"
    inc forgotten "$c_forgotten"
    inc killed_but_committed "$c_late"
    py manifest "$corpus" "$rdir/corpus-after.json"
    cmp -s "$rdir/corpus-after.json" "$work/manifests/$round.json" ||
        violation "the corpus changed while the round ran (the script's own bug, or a restore wrote into it)"
    rm "$rdir/corpus-after.json"
    extra_note=
    if ((verify_every > 0 && round % verify_every == 0)); then
        verify_snapshots "$verify_snapshots" "$rdir/post.json"
        extra_note=", data checked"
    fi
    rand 2
    if ((idle_minutes > 0 && REPLY == 0)); then
        # Every command of the round has ended: nothing runs while the clock moves.
        py age "$work/repo" $((idle_minutes * 60))
        inc idle_gaps
        extra_note+=", then ${idle_minutes} min idle"
    fi
    now_ms
    printf 'round %d/%d (%ds): %s; check ok, %d snapshots%s\n' "$round" "$rounds" \
        $(((REPLY - t_start) / 1000)) "$what" "$(py list "$rdir/post.json" | wc -l)" "$extra_note"
done

# The end: one more prune, then every remaining snapshot restored and compared.
round=final
rdir=$work/logs/final
mkdir -p "$rdir"
run_ok final-prune prune prune --grace 0 --json
prune_stats final-prune
run_ok final-check check check
run_ok final-list snapshots snapshots --json
cp "$rdir/final-list.out" "$rdir/final.json"
verify_snapshots 1000000 "$rdir/final.json"
now_ms
elapsed=$(((REPLY - t_start) / 1000))

status=ok
echo
echo "crash-loop: PASSED, SEED=$seed, $rounds rounds in ${elapsed}s"
printf '  scenarios:'
for s in backup two_backups forget_prune prune_vs_backup two_prunes restore; do printf ' %s %d' "$s" "${count[scenario:$s]:-0}"; done
echo
for k in backup forget forget-prune prune restore; do
    line=
    total=0
    for s in KILL INT INT2 TERM; do
        n=${count[kill:$k:$s]:-0}
        total=$((total + n))
        ((n == 0)) || line+=" $s $n"
    done
    printf '  %-13s interrupted %d (%s), finished before the signal %d, re-runs %d, slowest exit after SIGINT/SIGTERM %d ms\n' \
        "$k" "$total" "${line# }" "${count[miss:$k]:-0}" "${count[reruns:$k]:-0}" "${count[stop_ms:$k]:-0}"
done
echo "  snapshots: committed ${count[committed]:-0} (killed by SIGKILL after committing ${count[killed_but_committed]:-0}), forgotten ${count[forgotten]:-0}"
echo "  verified: ${count[snapshots_verified]:-0} snapshot restores compared (${#verified[@]} distinct), $((${count[bytes_restored]:-0} / 1048576)) MiB restored, ${count[data_checks]:-0} check --read-data, ${count[resumed_restores]:-0} restores resumed"
echo "  prune: ${count[pruned_packs]:-0} packs deleted, ${count[plans_executed]:-0} plans executed, ${count[plans_waiting]:-0} times a plan waited for a session, ${count[audit_removed]:-0} audit records removed; ${count[idle_gaps]:-0} idle gaps of ${idle_minutes} min"
echo "  notes (SIGTERM before bunker's handler): ${count[notes]:-0}"
if [[ -z ${KEEP:-} ]]; then rm -rf "$work"; else echo "  workdir kept: $work"; fi
