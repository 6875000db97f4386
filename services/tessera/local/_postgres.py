"""A local PostgreSQL server (see :func:`start_postgres`).

PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` system user
(or a ``tessera`` system user created on demand) and its data folder is given to that
user; every folder above the data folder must be enterable by it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from tessera.local._child import (
    RunAs,
    ServerProcess,
    check_traversable,
    chown_tree,
    on_free_port,
    server_user,
    spawn,
    started,
)
from tessera.local._net import accepts

PG_USER = "tessera"
PG_DATABASE = "tessera"
PG_ADMIN = "postgres"  # the superuser of a data folder made with a password
_PG_MARKER = "tessera.initialized"  # written once the `tessera` database exists
_PG_SECURED = "tessera.passwords"  # written once pg_hba.conf asks for passwords
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin for ".s.PGSQL.NNNNN"


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)


def find_pg_bin() -> Path:
    """The folder holding ``initdb`` and ``postgres``: from PATH first, else the newest
    ``/usr/lib/postgresql/<version>/bin``."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    installed = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(installed, key=lambda p: _version_key(p.parent.name), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or in "
        "/usr/lib/postgresql/*/bin: run `make deps` (Debian package `postgresql`)"
    )


def _check_pg_trgm(bin_dir: Path) -> None:
    """Raise unless the pg_trgm extension is installed next to these binaries."""
    shares: list[Path] = []
    if (bin_dir / "pg_config").is_file():
        out = subprocess.run(
            [str(bin_dir / "pg_config"), "--sharedir"], capture_output=True, text=True, check=False
        )
        if out.returncode == 0:
            shares.append(Path(out.stdout.strip()))
    version = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    major = re.search(r"(\d+)", version)
    if major:
        shares.append(Path("/usr/share/postgresql") / major.group(1))
    shares += [bin_dir.parent / "share" / "postgresql", bin_dir.parent / "share"]
    if not any((s / "extension" / "pg_trgm.control").is_file() for s in shares):
        raise RuntimeError(
            f"the pg_trgm extension is not installed for {bin_dir} (looked in "
            f"{', '.join(map(str, shares))}): install the contrib modules "
            "(part of Debian's postgresql-<version>; `make deps`)"
        )


class PostgresProcess(ServerProcess):
    """A running PostgreSQL postmaster; ``stop()`` is a fast shutdown (SIGINT)."""

    name = "postgres"
    stop_signal = signal.SIGINT

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        log_path: Path,
        data_dir: Path,
        port: int,
        password: str | None = None,
    ) -> None:
        super().__init__(proc, log_path)
        self.data_dir = data_dir
        self.port = port
        self.password = password

    @property
    def dsn(self) -> str:
        """The services' connection string (with the role's password, if it has one)."""
        secret = f":{quote(self.password, safe='')}" if self.password else ""
        return f"postgresql://{PG_USER}{secret}@127.0.0.1:{self.port}/{PG_DATABASE}"

    @property
    def shown_dsn(self) -> str:
        """:attr:`dsn` fit for a log: the password hidden."""
        secret = ":***" if self.password else ""
        return f"postgresql://{PG_USER}{secret}@127.0.0.1:{self.port}/{PG_DATABASE}"


def _run_pg_tool(argv: list[str], user: RunAs | None, what: str, stdin: str = "") -> str:
    kwargs: dict[str, object] = {}
    if user is not None:
        kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
    done = subprocess.run(  # type: ignore[call-overload]
        argv, input=stdin, capture_output=True, text=True, cwd="/", check=False, **kwargs
    )
    output = str(done.stdout) + str(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{output}")
    return output


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _single_user(bin_dir: Path, data: Path, user: RunAs | None, sql: str, what: str) -> None:
    """Run ``sql`` in single-user mode (the server stopped); an "already exists" is fine."""
    output = _run_pg_tool(
        [str(bin_dir / "postgres"), "--single", "-D", str(data), "template1"],
        user, what, stdin=sql,
    )  # fmt: skip
    errors = [ln for ln in output.splitlines() if "ERROR:" in ln]
    if errors and not all("already exists" in ln for ln in errors):
        raise RuntimeError(f"{what} failed:\n{output}")


def _prepare_data_dir(
    bin_dir: Path, data: Path, user: RunAs | None, password: str | None, admin_password: str | None
) -> None:
    """initdb an empty folder, then create the ``tessera`` database (single-user mode).

    Without a password: trust authentication and ``tessera`` the superuser (tests).
    With one: ``postgres`` the superuser (``admin_password``), ``tessera`` a role that
    may log in and create databases and nothing more, owner of the ``tessera`` database,
    and SCRAM-SHA-256 passwords asked of every connection (RFC 7677).
    """
    data.mkdir(parents=True, exist_ok=True)
    if user is not None:
        check_traversable(data, user)
        chown_tree(data, user)
    data.chmod(0o700)
    if not (data / "PG_VERSION").exists():
        if any(data.iterdir()):
            raise RuntimeError(f"{data} is neither empty nor a PostgreSQL data folder")
        argv = [str(bin_dir / "initdb"), "-D", str(data), "-E", "UTF8", "--locale=C.UTF-8",
                "--lc-collate=C"]  # fmt: skip
        if password:
            pwfile = data.parent / f".{data.name}.pwfile"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write((admin_password or password) + "\n")
            if user is not None:
                os.chown(pwfile, user.uid, user.gid)
            argv += ["-U", PG_ADMIN, f"--pwfile={pwfile}", "--auth=scram-sha-256"]
            try:
                _run_pg_tool(argv, user, "initdb")
            finally:
                pwfile.unlink(missing_ok=True)
            (data / _PG_SECURED).write_text("connections need a password\n")
        else:
            _run_pg_tool([*argv, "-U", PG_USER, "--auth-local=trust", "--auth-host=trust"],
                         user, "initdb")  # fmt: skip
    if not (data / _PG_MARKER).exists():
        role = ""
        if password and (data / _PG_SECURED).exists():
            role = f"CREATE ROLE {PG_USER} LOGIN CREATEDB PASSWORD {_sql_literal(password)};\n"
        _single_user(
            bin_dir, data, user, f"{role}CREATE DATABASE {PG_DATABASE} OWNER {PG_USER};\n",
            "creating the tessera role and database",
        )  # fmt: skip
        (data / _PG_MARKER).write_text("the tessera role and database exist\n")
    if password and not (data / _PG_SECURED).exists():
        # a folder made with trust authentication by an older Tessera: its `tessera` is
        # the bootstrap superuser and stays one, but now needs the password
        _single_user(bin_dir, data, user,
                     f"ALTER ROLE {PG_USER} PASSWORD {_sql_literal(password)};\n",
                     "setting the tessera role's password")  # fmt: skip
        hba = data / "pg_hba.conf"
        hba.write_text(hba.read_text().replace(" trust", " scram-sha-256"))
        (data / _PG_SECURED).write_text("connections need a password\n")


def _pg_ready(data: Path, pid: int, port: int) -> bool:
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    started = len(lines) >= 8 and lines[0] == str(pid) and lines[7].strip() == "ready"
    return started and accepts(port)


def start_postgres(
    data_dir: str | os.PathLike[str],
    port: int | None = None,
    *,
    durable: bool = True,
    settings: Mapping[str, str] | None = None,
    pg_bin: Path | None = None,
    timeout: float = 60.0,
    password: str | None = None,
    admin_password: str | None = None,
) -> PostgresProcess:
    """Start PostgreSQL on 127.0.0.1:``port`` with its data in ``data_dir``.

    An empty (or missing) ``data_dir`` is initialised first: UTF8 and a ``tessera``
    database owned by a role ``tessera``. Without ``password``, trust authentication
    (loopback only) and ``tessera`` the superuser, as tests use it; with it, ``tessera``
    is no superuser and every connection needs its password (the superuser is
    ``postgres``, with ``admin_password``): what ``make run`` uses (:func:`_prepare_data_dir`).
    An existing one is reused with its data. ``durable=False`` turns off
    fsync, synchronous_commit and full_page_writes (tests); ``settings`` adds ``-c`` GUCs.
    Returns once the server accepts connections.
    """
    bin_dir = pg_bin or find_pg_bin()
    _check_pg_trgm(bin_dir)
    data = Path(data_dir).absolute()
    user = server_user()
    _prepare_data_dir(bin_dir, data, user, password, admin_password)
    sockets = str(data) if len(str(data)) < _SOCKET_PATH_MAX - 16 else ""
    log_path = data / "server.log"

    def launch(port: int) -> PostgresProcess:
        gucs = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": sockets,
            "max_connections": "200",
        }
        if not durable:
            gucs.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        gucs.update(settings or {})
        argv = [str(bin_dir / "postgres"), "-D", str(data)]
        for name, value in gucs.items():
            argv += ["-c", f"{name}={value}"]
        proc = spawn(argv, log_path, death_signal=signal.SIGINT, user=user, cwd=data)
        server = PostgresProcess(proc, log_path, data, port, password)
        return started(server, lambda: _pg_ready(data, proc.pid, port), "PostgreSQL", timeout)

    return on_free_port(launch, port)
