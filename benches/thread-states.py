#!/usr/bin/env python3
"""Where a command's threads spend their time, sampled from /proc.

usage: benches/thread-states.py CMD [ARG...]

Runs CMD and, every 2 ms until it exits, reads each of its threads' state (R running or
runnable, S sleeping, D waiting for the disk) and wchan (the kernel function it sleeps in).
Prints, per thread, how many samples it spent in each (state, wchan) seen in at least 3% of
them, then how often one or more threads were in D at once. A thread that is mostly R but
barely on the CPU in a profile is waiting for a CPU; one in D at `__iomap_dio_rw` is in a
direct write; one in D at `ext4_file_write_iter` waits for the inode lock.
"""
import collections
import os
import subprocess
import sys
import time


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
    tasks = f"/proc/{child.pid}/task"
    counts = collections.Counter()
    in_disk = collections.Counter()
    rounds = 0
    while child.poll() is None:
        waiting = 0
        try:
            threads = os.listdir(tasks)
        except OSError:
            break
        for tid in threads:
            try:
                with open(f"{tasks}/{tid}/stat") as stat:
                    state = stat.read().rsplit(")", 1)[1].split()[0]
                with open(f"{tasks}/{tid}/wchan") as wchan:
                    where = wchan.read() or "-"
            except OSError:
                continue
            counts[(int(tid), state, where)] += 1
            waiting += state == "D"
        in_disk[waiting] += 1
        rounds += 1
        time.sleep(0.002)
    print(f"{rounds} samples; exit status {child.wait()}")
    for (tid, state, where), count in sorted(counts.items()):
        if count >= rounds * 0.03:
            print(f"thread {tid:>7} {state} {where:<28} {count:>6} ({100 * count / rounds:.0f}%)")
    for waiting, count in sorted(in_disk.items()):
        print(f"{waiting} thread(s) in D: {100 * count / max(rounds, 1):.0f}% of samples")


if __name__ == "__main__":
    main()
