"""glibc malloc settings of the services (tessera.shared.malloc, issue 12): buffers of an
instance's size are reused from the heap, not faulted in page by page each time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tessera.shared import malloc

# As retrieve sends a series: 200 files of 400-600 KiB read whole by a worker thread, three
# held at a time (the part being sent and the two opened ahead); the minor page faults it
# takes (ru_minflt)
SIZES = [400 * 1024 + (i * 7919) % (200 * 1024) for i in range(200)]
_FAULTS = f"""
import collections, resource, sys
from concurrent.futures import ThreadPoolExecutor
from tessera.shared import malloc
if sys.argv[1] == "tuned":
    malloc.tune()
data = b"x" * (1024 * 1024)
pool = ThreadPoolExecutor(4)
window = collections.deque()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for n in {SIZES!r}:
    window.append(pool.submit(bytes, data[:n]).result())
    if len(window) > 3:
        window.popleft()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_glibc_takes_every_setting_the_environment_does_not_set():
    # in a process of its own: the settings are the process's for good
    script = (
        "import json; from tessera.shared import malloc; print(json.dumps(["
        "malloc.tune({}), malloc.tune({'MALLOC_ARENA_MAX': '8', 'MALLOC_TRIM_THRESHOLD_': '0'})"
        "]))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    everything, some = json.loads(out.stdout)
    assert everything == {
        "MALLOC_ARENA_MAX": malloc.ARENA_MAX,
        "MALLOC_MMAP_THRESHOLD_": malloc.MMAP_THRESHOLD,
        "MALLOC_TRIM_THRESHOLD_": malloc.TRIM_THRESHOLD,
    }
    assert some == {"MALLOC_MMAP_THRESHOLD_": malloc.MMAP_THRESHOLD}


def test_instance_sized_buffers_are_reused_instead_of_faulted_in():
    pages = sum(SIZES) // 4096
    untuned, tuned = _faults("untuned"), _faults("tuned")
    # glibc as it comes: fresh pages for a good part of the buffers (6,200 of ~25,000
    # here; one per page in the services, issue 12)
    assert untuned > pages // 8
    # tuned: the heap's pages are reused (~730)
    assert tuned < untuned // 4
