#!/usr/bin/env python3
"""What the alignment of a read's memory costs: reads FILE (warm it in the page cache
first) from FILE_OFFSET to its end with reads of SIZE MiB into memory that starts
MEMORY_OFFSET bytes past a page boundary, and prints the CPU seconds each pair took.

usage: benches/read-alignment.py FILE [SIZE_MIB] [MEMORY_OFFSET[:FILE_OFFSET]...]

On the AMD Zen 3 of session 18 (docs/PERFORMANCE.md), memory 1-31 bytes past a 64-byte
boundary read from offset 0 took four times the system time of any pair that agreed
modulo 64: the kernel's copy to user memory is slow there, and a large allocation from the
allocator starts 16 bytes past a page.
"""

import mmap
import os
import sys
import time


def cpu_seconds(path, size, offset, file_offset):
    memory = mmap.mmap(-1, size + mmap.PAGESIZE)
    view = memoryview(memory)[offset : offset + size]
    fd = os.open(path, os.O_RDONLY)
    try:
        started = time.process_time()
        position = file_offset
        while (read := os.preadv(fd, [view], position)) > 0:
            position += read
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
    pairs = sys.argv[3:] or ["0", "1", "16", "32", "48", "16:16", "17:17", "0:16"]
    for pair in pairs:
        memory, _, file = pair.partition(":")
        seconds = cpu_seconds(path, size, int(memory), int(file or 0))
        print(f"memory +{memory:>4}, file offset {file or 0:>4}: {seconds:.2f} CPU s")


if __name__ == "__main__":
    main()
