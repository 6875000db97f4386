"""What creating a file costs in the bench's folder right now (issue 12).

On this machine's ext4 (mounted without a journal) allocating an inode is cheap in one
place and up to a millisecond of CPU in another: without a journal, ext4 skips every
free inode of the block group that was freed in the last half minute, reading each
one's inode table block to find that out (``recently_deleted`` in fs/ext4/ialloc.c), so
a folder near where thousands of files were just deleted (a test run, a stopped
server's data) makes every new file cost more. Both servers create at least one file per
stored instance, so a STOW's figures move with it; the report gives this probe beside
each STOW so that two runs, or two targets, can be told apart by it.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path


def file_create_us(folder: Path, files: int = 200) -> float:
    """Median CPU (µs, this thread's, kernel included) to create and close one empty
    file in a new subfolder of ``folder``; the files stay (deleting them would make the
    next creations dearer, the very thing measured) until ``folder`` goes."""
    probe = Path(tempfile.mkdtemp(prefix="fsprobe-", dir=folder))
    spent = []
    for i in range(files):
        started = time.thread_time_ns()
        fd = os.open(probe / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        spent.append(time.thread_time_ns() - started)
    return round(statistics.median(spent) / 1000, 1)
