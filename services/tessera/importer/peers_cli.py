"""``tessera peers``: DICOMweb peers and their transfer jobs, from the command line.

A client of the router's admin API (``/admin/peers``, ``/admin/peer-jobs``; the admin
permission)::

    tessera peers add orthanc https://pacs.example.org/dicom-web --basic alice:secret
    tessera peers check orthanc
    tessera peers pull orthanc --study 1.2.840.113619.2.55.3.604688119
    tessera peers push orthanc --query PatientID=12345
    tessera peers mirror hospital-b --kind-tessera --from-now
    tessera peers jobs
    tessera peers cancel 5f0c3a9e1b2d4c6a

``pull`` and ``push`` show the job's progress (instances, MB, rate, ETA) until it ends;
Ctrl-C stops watching, not the job (``tessera peers cancel ID`` does). ``--url`` is the
router's address (default ``$TESSERA_URL`` or http://127.0.0.1:8042), ``--token`` an
admin API key or bearer token (default ``$TESSERA_TOKEN``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tessera peers", description="DICOMweb peers and transfer jobs"
    )
    p.add_argument("--url", default=os.environ.get("TESSERA_URL", "http://127.0.0.1:8042"),
                   help="the router (default: $TESSERA_URL or http://127.0.0.1:8042)")  # fmt: skip
    p.add_argument("--token", default=os.environ.get("TESSERA_TOKEN"),
                   help="an admin API key or bearer token (default: $TESSERA_TOKEN)")  # fmt: skip
    p.add_argument("--cacert", help="a CA bundle to verify the router's certificate")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registered peers")
    add = sub.add_parser("add", help="register (or change) a peer")
    add.add_argument("name")
    add.add_argument("peer_url", help="the peer's DICOMweb base URL")
    add.add_argument("--tessera", action="store_true", help="the peer is a Tessera (change feed)")
    auth = add.add_mutually_exclusive_group()
    auth.add_argument("--bearer", metavar="TOKEN", help="a bearer token for the peer")
    auth.add_argument("--basic", metavar="USER:PASSWORD", help="HTTP Basic credentials")
    auth.add_argument("--client-credentials", nargs=3, metavar=("TOKEN_URL", "ID", "SECRET"),
                      help="OAuth 2.0 client credentials")  # fmt: skip
    add.add_argument("--scope", default="", help="the scope to ask with client credentials")
    add.add_argument(
        "--peer-ca", type=Path, help="PEM of the CA that signed the peer's certificate"
    )
    add.add_argument("--insecure", action="store_true", help="do not verify the peer's certificate")
    add.add_argument("--description", default="")
    for name in ("remove", "check"):
        sub.add_parser(name, help=f"{name} a peer").add_argument("name")
    for kind in ("pull", "push"):
        cmd = sub.add_parser(
            kind, help=f"{kind} studies {'from' if kind == 'pull' else 'to'} a peer"
        )
        cmd.add_argument("name")
        cmd.add_argument("--study", action="append", default=[], help="a StudyInstanceUID (repeat)")
        cmd.add_argument("--query", action="append", default=[], metavar="KEY=VALUE",
                         help="QIDO-RS keys that find the studies (repeat)")  # fmt: skip
        cmd.add_argument("--no-verify", action="store_true", help="do not read back each instance")
        cmd.add_argument("--detach", action="store_true", help="print the job and return")
    mirror = sub.add_parser("mirror", help="follow a peer until cancelled")
    mirror.add_argument("name")
    mirror.add_argument("--from-now", action="store_true", help="only what changes from now on")
    mirror.add_argument("--since", help="(any DICOMweb peer) studies of StudyDate since YYYYMMDD")
    mirror.add_argument("--interval", type=int, default=30, help="(any peer) seconds between polls")
    sub.add_parser("jobs", help="the jobs, newest first")
    sub.add_parser("job", help="watch one job").add_argument("id")
    sub.add_parser("cancel", help="cancel a job").add_argument("id")
    return p


def _peer_body(args: argparse.Namespace) -> dict[str, Any]:
    auth: dict[str, str] = {"type": "none"}
    if args.bearer:
        auth = {"type": "bearer", "token": args.bearer}
    elif args.basic:
        user, _, password = args.basic.partition(":")
        auth = {"type": "basic", "username": user, "password": password}
    elif args.client_credentials:
        url, cid, secret = args.client_credentials
        auth = {"type": "client_credentials", "tokenUrl": url, "clientId": cid,
                "clientSecret": secret, "scope": args.scope}  # fmt: skip
    return {
        "url": args.peer_url,
        "kind": "tessera" if args.tessera else "dicomweb",
        "auth": auth,
        "caCert": args.peer_ca.read_text() if args.peer_ca else "",
        "verifyTls": not args.insecure,
        "description": args.description,
    }


def _transfer_body(args: argparse.Namespace) -> dict[str, Any]:
    if bool(args.study) == bool(args.query):
        raise SystemExit("name the studies: --study UID (repeat) or --query KEY=VALUE (repeat)")
    body: dict[str, Any] = {"verify": not args.no_verify}
    if args.study:
        body["studies"] = args.study
    else:
        pairs = [q.partition("=") for q in args.query]
        if any(not sep for _, sep, _ in pairs):
            raise SystemExit("--query KEY=VALUE")
        body["query"] = {k: v for k, _, v in pairs}
    return body


def progress_line(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    done = p.get("completed", 0) + p.get("skipped", 0) + p.get("failed", 0)
    total = p.get("total", 0)
    width = 24
    filled = int(width * done / total) if total else 0
    bar = "#" * filled + "-" * (width - filled)
    return (
        f"{job['kind']} {job['peer']} [{bar}] {done}/{total} instances, "
        f"{p.get('bytes', 0) / 1e6:.1f} MB, {p.get('rate', 0.0):.1f}/s, "
        f"ETA {p.get('eta', 0.0):.0f} s, {p.get('failed', 0)} failed ({job['state']})"
    )


def _watch(client: httpx.Client, job: dict[str, Any]) -> int:
    tty = sys.stdout.isatty()
    try:
        while job["state"] in ("queued", "running"):
            print(
                ("\r\033[K" if tty else "") + progress_line(job),
                end="" if tty else "\n",
                flush=True,
            )
            time.sleep(0.5 if tty else 5.0)
            job = _ok(client.get(f"/admin/peer-jobs/{job['id']}"))
    except KeyboardInterrupt:
        print(f"\nthe job goes on in the archive: tessera peers cancel {job['id']} stops it")
        return 130
    print(("\r\033[K" if tty else "") + progress_line(job))
    for reason in (job.get("progress") or {}).get("reasons", []):
        print(f"  failed: {reason}")
    if job.get("detail"):
        print(f"  {job['detail']}")
    return 0 if job["state"] == "done" else 1


def _ok(r: httpx.Response) -> Any:
    if r.status_code >= 400:
        raise SystemExit(f"the archive answered {r.status_code}: {r.text.strip()[:300]}")
    return r.json() if r.content else None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    verify: Any = args.cacert or True
    with httpx.Client(
        base_url=args.url.rstrip("/"), headers=headers, verify=verify, timeout=60
    ) as client:
        cmd = args.command
        if cmd == "list":
            for peer in _ok(client.get("/admin/peers"))["peers"]:
                print(f"{peer['name']}\t{peer['kind']}\t{peer['url']}\t{peer['auth']['type']}")
        elif cmd == "add":
            print(
                json.dumps(
                    _ok(client.put(f"/admin/peers/{args.name}", json=_peer_body(args))), indent=2
                )
            )
        elif cmd == "remove":
            _ok(client.delete(f"/admin/peers/{args.name}"))
        elif cmd == "check":
            r = client.post(f"/admin/peers/{args.name}/check")
            print(r.text.strip())
            return 0 if r.status_code == 200 else 1
        elif cmd in ("pull", "push"):
            job = _ok(client.post(f"/admin/peers/{args.name}/{cmd}", json=_transfer_body(args)))
            if args.detach:
                print(job["id"])
                return 0
            return _watch(client, job)
        elif cmd == "mirror":
            body: dict[str, Any] = {"interval": args.interval}
            if args.from_now:
                body["from"] = "now"
            if args.since:
                body["since"] = args.since
            job = _ok(client.post(f"/admin/peers/{args.name}/mirror", json=body))
            print(f"mirror job {job['id']}: tessera peers job {job['id']} shows it")
        elif cmd == "jobs":
            for job in _ok(client.get("/admin/peer-jobs"))["jobs"]:
                print(f"{job['id']}\t{job['created']}\t{progress_line(job)}")
        elif cmd == "job":
            return _watch(client, _ok(client.get(f"/admin/peer-jobs/{args.id}")))
        elif cmd == "cancel":
            print(progress_line(_ok(client.delete(f"/admin/peer-jobs/{args.id}"))))
    return 0
