"""``make bench BENCH_ARGS=--auth``: what checking a bearer token costs (issue 10).

One cluster (``tessera run``), one small dataset (a study of 20 synthetic 256×256
16-bit slices, :mod:`bench.dataset`), measured three ways in the same run, the cluster
restarted on the same data between them: authentication off; on, with an access token
from the demo OpenID provider (``make run AUTH=1``'s, a real node-oidc-provider); on, with
a Tessera API key. Each way:
QIDO-RS ``/studies`` and one ``/frames/1`` (as stored), sequential, ``--repetitions``
timed requests after a warm-up, p50 and p95 in ms. The audit trail and the internal
credential to the shards are on in all three (``tessera run`` always has them), so the
difference is the token check at the router. The target: under 0.2 ms per request.
The three ways run twice, interleaved (off, on, off, on), to see the noise.

    .venv/bin/python bench/run.py --auth [--repetitions 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.cluster import TesseraCluster, start_tessera
from bench.dataset import Spec, ensure

FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
# one study of 20 synthetic 256x256 16-bit slices (bench.dataset, cached in bench/.data)
SPEC = Spec(studies=1, series_per_study=1, instances_per_series=20, rows=256, columns=256)


def _store(cluster: TesseraCluster, headers: dict[str, str]) -> str:
    """The study of :data:`SPEC` in one STOW-RS request; the path of its first frame."""
    data = ensure(SPEC)
    parts = [
        b"--B\r\nContent-Type: application/dicom\r\n\r\n" + i.path.read_bytes() + b"\r\n"
        for i in data.instances
    ]
    r = httpx.post(
        cluster.dicomweb_url + "/studies",
        content=b"".join(parts) + b"--B--\r\n",
        headers={
            **headers,
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=B',
        },
        timeout=120,
    )
    r.raise_for_status()
    first = data.instances[0]
    return f"/studies/{first.study}/series/{first.series}/instances/{first.sop}/frames/1"


async def _latencies(url: str, headers: dict[str, str], n: int, warmup: int) -> list[float]:
    times = []
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(warmup + n):
            started = time.perf_counter()
            r = await client.get(url, headers=headers)
            elapsed = (time.perf_counter() - started) * 1000
            if r.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {r.status_code} {r.text[:200]}")
            if i >= warmup:
                times.append(elapsed)
    return times


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(ordered[int(len(ordered) * 0.95) - 1], 3),
    }


def _measure(
    cluster: TesseraCluster, frame: str, headers: dict[str, str], n: int
) -> dict[str, dict[str, float]]:
    qido = asyncio.run(_latencies(cluster.dicomweb_url + "/studies?limit=10", headers, n, 20))
    frames = asyncio.run(
        _latencies(cluster.dicomweb_url + frame, {**headers, "Accept": FRAME_ACCEPT}, n, 20)
    )
    return {"qido": _summary(qido), "frame": _summary(frames)}


def _oidc_token(state: Path) -> str:
    config = json.loads((state / "oidc" / "config.json").read_text())
    secret = (state / "oidc" / "cli-secret").read_text().strip()
    r = httpx.post(
        config["issuer"] + "/token",
        data={"grant_type": "client_credentials", "resource": "urn:tessera"},
        auth=("tessera-cli", secret),
        timeout=30,
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def _api_key(state: Path, env: dict[str, str]) -> str:
    dsn = env["TESSERA_AUTH_DATABASE_URL"]
    made = subprocess.run(
        [sys.executable, "-m", "tessera.router.auth.apikeys", "--database", dsn, "create",
         "--label", "bench", "--permission", "read", "--permission", "write"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return str(json.loads(made.stdout)["token"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py --auth", description=__doc__)
    parser.add_argument("--repetitions", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs, interleaved")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="tessera-bench-auth-"))
    root.chmod(0o711)
    rounds: list[dict[str, dict[str, dict[str, float]]]] = []
    frame = ""
    try:
        for _ in range(args.rounds):
            results: dict[str, dict[str, dict[str, float]]] = {}
            cluster = start_tessera(root, timeout=300)
            try:
                frame = frame or _store(cluster, {})
                results["off"] = _measure(cluster, frame, {}, args.repetitions)
            finally:
                cluster.stop()
            cluster = start_tessera(root, timeout=300, run_args=["--auth"])
            try:
                state = root / "state"
                bearer = {"Authorization": f"Bearer {_oidc_token(state)}"}
                results["oidc token"] = _measure(cluster, frame, bearer, args.repetitions)
                token = bearer["Authorization"].split()[1]
                dsn = _router_dsn(state)
                key = _api_key(state, {"TESSERA_AUTH_DATABASE_URL": dsn})
                bearer = {"Authorization": f"Bearer {key}"}
                results["API key"] = _measure(cluster, frame, bearer, args.repetitions)
                issuer = json.loads((state / "oidc" / "config.json").read_text())["issuer"]
                micro = asyncio.run(_in_process(issuer, dsn, token, key, 20_000))
                results["in process"] = {"router": micro}
            finally:
                cluster.stop()
            rounds.append(results)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n## Token checking at the router (p50 / p95 ms, sequential requests)\n")
    print("| round | request | auth off | OIDC token | cost | API key | cost |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    costs: dict[str, list[float]] = {}
    for n, results in enumerate(rounds, 1):
        for what in ("qido", "frame"):
            off, oidc, key = (results[m][what] for m in ("off", "oidc token", "API key"))
            costs.setdefault(f"{what} oidc", []).append(oidc["p50"] - off["p50"])
            costs.setdefault(f"{what} key", []).append(key["p50"] - off["p50"])
            print(
                f"| {n} | {what} | {off['p50']} / {off['p95']} | {oidc['p50']} / {oidc['p95']} |"
                f" {oidc['p50'] - off['p50']:+.3f} | {key['p50']} / {key['p95']} |"
                f" {key['p50'] - off['p50']:+.3f} |"
            )
    medians = {k: round(statistics.median(v), 3) for k, v in costs.items()}
    print(f"\nmedian end-to-end difference per request (ms, restarts included): {medians}")
    print("in the router's process, per request:")
    for name, value in rounds[-1]["in process"]["router"].items():
        print(f"  {name}: {value}")
    print(f"({args.repetitions} timed requests each; target: under 0.2 ms per request)")
    print(json.dumps({"rounds": rounds, "cost_p50_ms": medians}))
    return 0


async def _in_process(issuer: str, dsn: str, token: str, key: str, n: int) -> dict[str, float]:
    """Microseconds per call of what the router does per request before routing it:
    authenticate the bearer token and mint the shard credential for the caller."""
    from tessera.router.auth.security import Security
    from tessera.shared.settings import Settings

    settings = Settings(
        auth="on", auth_issuer=issuer, auth_database_url=dsn, internal_secret="b" * 48
    )
    security = Security(settings)
    await security.start()
    assert security.internal is not None and security.oidc is not None

    async def per_call(credential: str, calls: int, fresh: bool = False) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            if fresh:
                security.oidc._verified.clear()  # type: ignore[union-attr]  # bench only
            principal = await security.authenticate(credential)
            security.internal.header(principal)  # type: ignore[union-attr]
        return round((time.perf_counter() - started) / calls * 1e6, 2)

    try:
        await per_call(token, 10)
        await per_call(key, 10)
        return {
            "oidc token, cached (us)": await per_call(token, n),
            "oidc token, signature checked (us)": await per_call(token, max(n // 20, 50), True),
            "API key, cached (us)": await per_call(key, n),
        }
    finally:
        await security.close()


def _router_dsn(state: Path) -> str:
    """The router database of a ``tessera run`` data folder (its PostgreSQL's port)."""
    port = (state / "postgres" / "postmaster.pid").read_text().splitlines()[3].strip()
    return f"postgresql://tessera@127.0.0.1:{port}/tessera_router"


if __name__ == "__main__":
    sys.exit(main())
