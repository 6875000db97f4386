"""The local servers really start, serve real clients, keep data across a restart, and
stop by PID; and the shared fixtures in tests/conftest.py hand out isolated resources."""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio
from aiobotocore.session import get_session

from tessera.local import PortBusy, pid_alive, server_user
from tessera.local.processes import (
    create_bucket,
    free_port,
    start_postgres,
    start_redis,
    start_s3,
)
from tessera.local.supervisor import Service, supervise

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only as root")


@pytest.fixture
def folder() -> Iterator[Path]:
    """A fresh folder the PostgreSQL user can enter (unlike pytest's 0700 tmp_path)."""
    root = Path(tempfile.mkdtemp(prefix="tessera-proc-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


async def test_postgres_serves_keeps_data_across_restart_and_stops_by_pid(folder: Path) -> None:
    pg = start_postgres(folder / "pg")
    with pg:
        assert pg.dsn == f"postgresql://tessera@127.0.0.1:{pg.port}/tessera"
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert await conn.fetchval("select 1") == 1
            await conn.execute("create extension pg_trgm")
            assert await conn.fetchval("select similarity('Müller', 'Mueller')") > 0
            await conn.execute("create table kept (v text)")
            await conn.execute("insert into kept values ('across restarts')")
            assert await conn.fetchval("show server_encoding") == "UTF8"
        finally:
            await conn.close()
    first_pid = pg.pid
    assert not pg.running
    assert not pid_alive(first_pid)
    with pytest.raises(OSError):
        await asyncpg.connect(pg.dsn, timeout=5)

    with start_postgres(folder / "pg") as again:
        assert again.pid != first_pid
        conn = await asyncpg.connect(again.dsn)
        try:
            assert await conn.fetchval("select v from kept") == "across restarts"
            assert (
                await conn.fetchval("select count(*) from pg_extension where extname = 'pg_trgm'")
                == 1
            )
        finally:
            await conn.close()
    assert not pid_alive(again.pid)


async def test_postgres_with_a_password_asks_for_it_and_the_services_role_is_no_superuser(
    folder: Path,
) -> None:
    """What `make run` starts (issue 15): SCRAM passwords on every connection, and the
    services' role `tessera` may create databases (shards) and the schema's trusted
    extensions, and no more."""
    from tessera.shared.db.migrate import apply_migrations

    with start_postgres(
        folder / "pg", durable=False, password="p@ss/w'rd", admin_password="adm"
    ) as pg:
        assert pg.dsn == f"postgresql://tessera:p%40ss%2Fw%27rd@127.0.0.1:{pg.port}/tessera"
        assert "p@ss" not in pg.shown_dsn and ":***@" in pg.shown_dsn
        bare = f"postgresql://tessera@127.0.0.1:{pg.port}/tessera"
        for wrong in (bare, bare.replace("tessera@", "tessera:guess@")):
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(wrong, timeout=5)
        conn = await asyncpg.connect(pg.dsn)
        try:
            assert (
                await conn.fetchval("select rolsuper from pg_roles where rolname = current_user")
                is False
            )
            await conn.execute('create database "second"')
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("create role intruder superuser")
        finally:
            await conn.close()
        assert await apply_migrations(pg.dsn)  # pg_trgm and unaccent as the owner
        admin = f"postgresql://postgres:adm@127.0.0.1:{pg.port}/tessera"
        conn = await asyncpg.connect(admin)
        try:
            assert await conn.fetchval("select rolsuper from pg_roles where rolname = current_user")
        finally:
            await conn.close()
    with start_postgres(folder / "pg", durable=False, password="p@ss/w'rd") as again:
        conn = await asyncpg.connect(again.dsn)  # the same folder, the same role
        await conn.close()


async def test_an_older_trust_folder_gets_the_password_when_started_with_one(folder: Path) -> None:
    with start_postgres(folder / "pg", durable=False):
        pass
    with start_postgres(folder / "pg", durable=False, password="now-secret") as pg:
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://tessera@127.0.0.1:{pg.port}/tessera", timeout=5)
        conn = await asyncpg.connect(pg.dsn)
        await conn.close()


@as_root
def test_postgres_runs_unprivileged_when_started_as_root(folder: Path) -> None:
    user = server_user()
    assert user is not None
    with start_postgres(folder / "pg", durable=False) as pg:
        assert _uid_of(pg.pid) == user.uid != 0
        assert (folder / "pg").stat().st_uid == user.uid


@as_root
def test_postgres_explains_a_folder_its_user_cannot_enter(folder: Path) -> None:
    closed = folder / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(RuntimeError, match="cannot enter"):
        start_postgres(closed / "pg")


async def test_redis_serves_keeps_data_across_restart_and_stops_by_pid(folder: Path) -> None:
    server = start_redis(folder / "redis")
    with server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.asyncio.Redis.from_url(server.url)
        try:
            assert await client.ping() is True
            await client.set("tessera:key", b"kept")
            assert await client.get("tessera:key") == b"kept"
        finally:
            await client.aclose()
    assert not server.running
    assert not pid_alive(server.pid)

    with start_redis(folder / "redis") as again:
        client = redis.asyncio.Redis.from_url(again.url)
        try:
            assert await client.get("tessera:key") == b"kept"
        finally:
            await client.aclose()
    assert not pid_alive(again.pid)


async def test_redis_with_a_password_refuses_clients_without_it(folder: Path) -> None:
    with start_redis(folder / "redis", password="s3cret") as server:
        assert server.url == f"redis://:s3cret@127.0.0.1:{server.port}/0"
        assert "s3cret" not in server.shown_url
        assert "s3cret" not in _command_line(server.pid)
        anonymous = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{server.port}/0")
        with pytest.raises(redis.exceptions.AuthenticationError):
            await anonymous.ping()
        await anonymous.aclose()
        client = redis.asyncio.Redis.from_url(server.url)
        assert await client.ping() is True
        await client.aclose()


def test_a_taken_port_is_reported_with_the_server_log(folder: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortBusy, match=r"(?i)address already in use"):
            start_redis(folder / "redis", port)


async def test_s3_stores_and_returns_an_object_and_stops_by_pid(folder: Path) -> None:
    with start_s3(folder / "s3") as server:
        create_bucket(server.endpoint_url, "tessera-objects")
        create_bucket(server.endpoint_url, "tessera-objects")  # idempotent
        async with get_session().create_client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        ) as s3:
            await s3.put_object(Bucket="tessera-objects", Key="a/b.dcm", Body=b"DICM" * 100)
            got = await s3.get_object(Bucket="tessera-objects", Key="a/b.dcm")
            async with got["Body"] as body:
                assert await body.read() == b"DICM" * 100
    assert not server.running
    assert not pid_alive(server.pid)


def _pids(output: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"started (\S+) \(pid (\d+)\)", output)}


async def test_supervisor_restarts_a_child_that_dies_with_backoff_and_keeps_the_others() -> None:
    """Issue 15: a child that exits is reported and started again (1 s, 2 s, 4 s... while
    it keeps dying), the others run on, and the archive stops only when asked to."""
    out = io.StringIO()
    services = [
        Service("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"]),
        Service("crasher", [sys.executable, "-c", "import sys; print('last words'); sys.exit(3)"]),
    ]

    async def stop_after_three_starts() -> None:
        for _ in range(200):  # polls the supervisor's output, 10 s at most
            if out.getvalue().count("started crasher") >= 3:
                break
            await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    stopper = asyncio.create_task(stop_after_three_starts())
    started = time.monotonic()
    code = await supervise(services, dict(os.environ), out=out, backoff=(0.2, 0.4))
    await stopper
    text = out.getvalue()
    assert code == 0 and "stop requested" in text
    assert text.count("started sleeper") == 1  # never touched
    pids = re.findall(r"started crasher \(pid (\d+)\)", text)
    assert len(set(pids)) >= 3
    assert "EXITED with code 3: starting it again in 0s (exit #1" in text
    assert "(exit #2 in a row)" in text
    assert time.monotonic() - started >= 0.2 + 0.4  # the back-off was waited
    assert not any(pid_alive(pid) for pid in _pids(text).values())


async def test_supervisor_without_restarts_stops_every_child_when_one_dies() -> None:
    out = io.StringIO()
    services = [
        Service("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"]),
        Service("crasher", [sys.executable, "-c", "import sys; print('last words'); sys.exit(3)"]),
    ]
    code = await supervise(services, dict(os.environ), out=out, restart=False)
    text = out.getvalue()
    assert code == 1
    assert "crasher      | last words" in text
    assert "crasher (pid" in text and "EXITED with code 3" in text
    assert "stopping sleeper" in text
    assert not any(pid_alive(pid) for pid in _pids(text).values())


async def test_supervisor_announces_readiness_and_stops_on_sigterm(folder: Path) -> None:
    (folder / "healthz").write_text("ok")
    port = free_port()
    http = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory"]
    out = io.StringIO()
    ready: list[str] = []

    def on_ready() -> None:
        ready.append("ready")
        os.kill(os.getpid(), signal.SIGTERM)  # what Ctrl-C / systemd stop would do

    code = await supervise(
        [Service("web", [*http, str(folder), str(port)])],
        dict(os.environ),
        ready_url=f"http://127.0.0.1:{port}/healthz",
        on_ready=on_ready,
        out=out,
    )
    assert code == 0
    assert ready == ["ready"]
    assert "stop requested" in out.getvalue()
    assert not pid_alive(_pids(out.getvalue())["web"])


async def test_database_fixture_is_a_fresh_database(postgres_dsn: str, database: str) -> None:
    assert database != postgres_dsn
    conn = await asyncpg.connect(database)
    try:
        name = await conn.fetchval("select current_database()")
        assert name.startswith("test_")
        await conn.execute("create extension if not exists pg_trgm")
        await conn.execute("create table mine (id int)")
    finally:
        await conn.close()


async def test_redis_db_fixture_is_empty(redis_db: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_db)
    try:
        assert await client.dbsize() == 0
        await client.set("left-behind", 1)
    finally:
        await client.aclose()


async def test_s3_fixtures_give_a_usable_bucket(
    s3_endpoint: str, s3_settings: dict[str, str], s3_bucket: str
) -> None:
    assert s3_settings["s3_endpoint_url"] == s3_endpoint
    async with get_session().create_client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=s3_settings["s3_region"],
        aws_access_key_id=s3_settings["s3_access_key_id"],
        aws_secret_access_key=s3_settings["s3_secret_access_key"],
    ) as s3:
        listed = await s3.list_objects_v2(Bucket=s3_bucket)
        assert listed.get("KeyCount", 0) == 0


def test_free_port_never_hands_out_a_port_twice_nor_an_ephemeral_one() -> None:
    """Two services of one test cluster once drew the same port: the second could not
    bind, and its health check was answered by the first (the router then sent series
    metadata requests to the index: 404). Ports are unique per process, bindable, and
    below the kernel's ephemeral range, which outgoing connections draw from."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(p < low for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # nothing holds it
