#!/usr/bin/env python3
"""bunker's ratios against each peer from one run of the shared harness, and the performance
issue's targets judged on them (met or not, to three decimals: a ratio of 1.004 is over).

usage: benches/peer_ratios.py RESULTS_DIR
  RESULTS_DIR holds the harness's results.tsv and, when benches/peers.sh made it, cp-a.time
  (`/usr/bin/time -f "%e %U %S %M"` of `cp -a` of the corpus). Prints to stdout.
"""
import csv
import os
import statistics
import sys
from collections import defaultdict

PHASES = ["full", "nochg", "chg", "restore"]


def load(results_dir):
    rows = csv.DictReader(open(os.path.join(results_dir, "results.tsv")), delimiter="\t")
    by = defaultdict(list)
    for row in rows:
        if row["rc"] == "0":
            by[(row["config"], row["phase"])].append(row)
    return by


def mean(by, config, phase, field):
    """Mean over repetitions; `cpu_s` is user + system time. None when not measured."""
    rows = by.get((config, phase), [])
    if field == "cpu_s":
        values = [float(r["user_s"]) + float(r["sys_s"]) for r in rows]
    else:
        values = [float(r[field]) for r in rows if r[field]]
    return statistics.mean(values) if values else None


def ratio(a, b):
    return a / b if a is not None and b else None


def cell(value):
    return f"{value:7.3f}" if value is not None else "      -"


def main():
    results_dir = sys.argv[1]
    by = load(results_dir)
    peers = sorted({config for config, _ in by} - {"bunker"})

    print("\nbunker / peer (lower is better for bunker), means over repetitions:")
    print(f"{'peer':<12} {'phase':<8} {'wall':>7} {'cpu':>7} {'rss':>7} {'repo':>7}")
    for peer in peers:
        for phase in PHASES:
            cells = [
                cell(ratio(mean(by, "bunker", phase, field), mean(by, peer, phase, field)))
                for field in ["wall_s", "cpu_s", "maxrss_kb", "repo_bytes"]
            ]
            print(f"{peer:<12} {phase:<8} " + " ".join(cells))

    restore = mean(by, "bunker", "restore", "wall_s")
    cp_time = os.path.join(results_dir, "cp-a.time")
    cp_wall = None
    if os.path.exists(cp_time):
        cp_wall, cp_user, cp_sys, _ = map(float, open(cp_time).read().split()[-4:])
        if restore:
            print(f"cp -a        restore  {restore / cp_wall:7.3f} "
                  f"(bunker {restore:.2f} s, cp -a {cp_wall:.2f} s, {cp_user + cp_sys:.2f} CPU s)")

    # The targets, each as (what, ratio, limit).
    targets = []

    def against_restic(what, phase, field, limit):
        if "restic" in peers:
            value = ratio(mean(by, "bunker", phase, field), mean(by, "restic", phase, field))
            targets.append((what, value, limit))

    against_restic("first backup wall <= 0.5x restic", "full", "wall_s", 0.5)
    fastest = min(
        (mean(by, peer, "full", "wall_s"), peer)
        for peer in peers
        if mean(by, peer, "full", "wall_s")
    ) if peers else None
    if fastest:
        value = ratio(mean(by, "bunker", "full", "wall_s"), fastest[0])
        targets.append((f"first backup wall <= 0.77x the fastest peer ({fastest[1]})", value, 0.77))
    against_restic("no-change backup wall <= 0.2x restic", "nochg", "wall_s", 0.2)
    against_restic("backup after the change wall <= 0.5x restic", "chg", "wall_s", 0.5)
    against_restic("restore wall <= 0.5x restic", "restore", "wall_s", 0.5)
    if cp_wall and restore:
        targets.append(("restore wall <= cp -a", restore / cp_wall, 1.0))
    for phase in PHASES:
        against_restic(f"peak RSS <= restic's, {phase}", phase, "maxrss_kb", 1.0)
    for phase in ["full", "chg"]:
        sizes = [(mean(by, peer, phase, "repo_bytes"), peer) for peer in peers]
        sizes = [size for size in sizes if size[0]]
        if sizes:
            smallest = min(sizes)
            value = ratio(mean(by, "bunker", phase, "repo_bytes"), smallest[0])
            targets.append(
                (f"repository after {phase} <= the smallest peer's ({smallest[1]})", value, 1.0))

    print("\ntargets (ratio, limit):")
    for what, value, limit in targets:
        verdict = "-" if value is None else ("met" if value <= limit else "NOT met")
        print(f"  {what:<62} {cell(value)} <= {limit:<5} {verdict}")


if __name__ == "__main__":
    main()
