"""Waiting for what a background job does (peer jobs, webhooks, the sweeper)."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(check: Callable[[], object], timeout: float = 90.0, every: float = 0.25) -> None:
    """Return once ``check()`` is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"not reached in {timeout:.0f} s")
