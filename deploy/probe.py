#!/usr/bin/env python3
"""``tessera-probe URL...``: exit 0 when every URL answers, for container health checks
(the slim image has no curl).

* ``http://...``: a GET answered with a 2xx status within 4 seconds (``/readyz``,
  ``/healthz`` of a Tessera service);
* ``redis://...``: a Redis PING answered (the rebalance worker, which runs one long job
  at a time and serves no HTTP, is probed through its broker).
"""

from __future__ import annotations

import sys
import urllib.request

TIMEOUT = 4.0


def probe(url: str) -> str | None:
    """None if ``url`` answers, else why not."""
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(url, socket_timeout=TIMEOUT)
            try:
                return None if client.ping() else "no PONG"
            finally:
                client.close()
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
            return None if 200 <= answer.status < 300 else f"HTTP {answer.status}"
    except Exception as e:  # any failure is "not healthy", said on stderr
        return f"{type(e).__name__}: {e}"


def main(urls: list[str]) -> int:
    if not urls:
        print("usage: tessera-probe URL [URL...]", file=sys.stderr)
        return 2
    failures = [(url, why) for url in urls if (why := probe(url)) is not None]
    for url, why in failures:
        print(f"{url}: {why}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
