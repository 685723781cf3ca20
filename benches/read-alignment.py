#!/usr/bin/env python3
"""What the alignment of a read's destination costs: reads FILE (warm it in the page cache
first) with reads of SIZE MiB into memory that starts OFFSET bytes past a page boundary,
and prints the CPU seconds each offset took.

usage: benches/read-alignment.py FILE [SIZE_MIB] [OFFSET...]

On the AMD Zen 3 of session 18 (docs/PERFORMANCE.md), offsets 1-31 past a 64-byte boundary
took four times the system time of 0 or 32-63: the kernel's copy to user memory is slow
there, and a large allocation from the allocator starts 16 bytes past a page.
"""

import mmap
import os
import sys
import time


def cpu_seconds(path, size, offset):
    memory = mmap.mmap(-1, size + mmap.PAGESIZE)
    view = memoryview(memory)[offset : offset + size]
    fd = os.open(path, os.O_RDONLY)
    try:
        started = time.process_time()
        while os.readv(fd, [view]) > 0:
            pass
        return time.process_time() - started
    finally:
        os.close(fd)
        view.release()
        memory.close()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip())
    path = sys.argv[1]
    size = int(sys.argv[2] if len(sys.argv) > 2 else 8) << 20
    offsets = [int(o) for o in sys.argv[3:]] or [0, 1, 8, 16, 24, 32, 48, 63, 64]
    for offset in offsets:
        print(f"offset {offset:5d}: {cpu_seconds(path, size, offset):.2f} CPU s")


if __name__ == "__main__":
    main()
