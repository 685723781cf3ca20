#!/usr/bin/env bash
# Peer benchmark: bunker beside restic, rustic and borg on the same corpus, in one run of the
# shared harness (../shared/bench/peers.sh: five phases per tool under /usr/bin/time -v),
# then bunker's ratios against each peer, phase by phase, its restore against `cp -a`, and the
# performance targets met or not (benches/peer_ratios.py, which also re-reads an older run).
#
# usage: benches/peers.sh [CORPUS] [CONFIG...]
#   CORPUS  src (default) | vol | mixed | tiny       (built here when missing)
#   CONFIG  peers to run beside bunker (default: restic rustic borg-zstd3)
# env: REPS (default 1), PEERBENCH_DATA (default /var/tmp/peerbench), SKIP_INSTALL=1,
#   EMPTY_TRASH=0 (keep the harness's finished repositories and restores in its trash).
# Installs what is missing (root; from the registries): restic and borgbackup (apt), rustic
# (`cargo install rustic-rs --locked` into target/peer-tools, ~12 min once). Run it on a quiet
# machine: the harness records other CPU use per phase in results.tsv (column other_cpu_s).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
harness=$root/../shared/bench
corpus=${1:-src}
shift || true
peers=("$@")
((${#peers[@]})) || peers=(restic rustic borg-zstd3)

if [[ ${SKIP_INSTALL:-0} != 1 ]]; then
    need=()
    command -v restic >/dev/null || need+=(restic)
    command -v borg >/dev/null || need+=(borgbackup)
    command -v /usr/bin/time >/dev/null || need+=(time)
    if ((${#need[@]})) && [[ $(id -u) == 0 ]]; then
        apt-get update -qq && apt-get install -y -qq "${need[@]}"
    fi
    if [[ " ${peers[*]} " == *" rustic"* ]] && ! command -v rustic >/dev/null \
        && [[ ! -x target/peer-tools/bin/rustic ]]; then
        cargo install rustic-rs --locked --root target/peer-tools
    fi
fi
export PATH=$root/target/peer-tools/bin:$PATH

# The shared harness checks free space after each tool with `df -P --output=avail`, which
# GNU df 9 refuses ("options -P and --output are mutually exclusive"): the check then fails
# with a syntax error on stderr and never empties the harness's trash during a run, so a
# long run can fill the disk. A `df` that drops -P when --output is given stands in here.
if ! df -P --output=avail / >/dev/null 2>&1; then
    shim=$root/target/peer-tools/df-shim
    mkdir -p "$shim"
    cat > "$shim/df" <<'SHIM'
#!/usr/bin/env bash
args=("$@")
if [[ " $* " == *" --output"* ]]; then
    args=()
    for a in "$@"; do [[ $a == -P ]] || args+=("$a"); done
fi
exec /usr/bin/df "${args[@]}"
SHIM
    chmod +x "$shim/df"
    export PATH=$shim:$PATH
fi

data=${PEERBENCH_DATA:-/var/tmp/peerbench}
if [[ ! -e $data/pristine/$corpus ]]; then
    "$harness/make-corpus.sh" deps
    [[ $corpus == vol ]] && "$harness/make-corpus.sh" build src
    "$harness/make-corpus.sh" build "$corpus"
fi

cargo build --release --locked -p bunker-cli
export BUNKER_BIN=$root/target/release/bunker
results=${RESULTS:-$data/results/bunker-$corpus-$(date +%Y%m%d-%H%M%S)}

# Restores and the `cp -a` below create whole trees: nothing is deleted from the start of
# the harness until the last of them, and a run begun soon after the last one's deletions
# first waits them out (see recent-deletions.sh). The harness's trash is emptied here, last.
. benches/recent-deletions.sh
cp_target=$data/cp-a-target
remove_tree "$cp_target" "$data"
wait_out_deletions "$data"
RESULTS=$results EMPTY_TRASH=0 "$harness/peers.sh" "$corpus" bunker "${peers[@]}"

# The floor for a restore: `cp -a` of the same tree into a fresh directory on the same
# filesystem, right after the harness (source in the page cache, as a restore's repository is).
sync
/usr/bin/time -f "%e %U %S %M" -o "$results/cp-a.time" cp -a "$data/pristine/$corpus" "$cp_target"
rm -rf "$cp_target"
[[ ${EMPTY_TRASH:-1} == 0 ]] || rm -rf "${data:?}"/trash/*
note_deletions "$data"

# bunker / peer, per phase (wall time, CPU, peak RSS, repository size), and the performance
# issue's targets judged on them; kept beside the harness's report.
python3 benches/peer_ratios.py "$results" | tee "$results/ratios.txt"
echo "results: $results (report.md has the absolute figures)"
