"""Child-process plumbing shared by the local servers and the ``tessera run`` supervisor.

Every child is started in its own session (a Ctrl-C in the terminal reaches only the
parent, which then stops the children in order) and, when started from the main
thread, is asked by the kernel to terminate if the parent dies (``PR_SET_PDEATHSIG``),
so a killed test run or supervisor does not leave servers behind.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

from tessera.local._net import free_port

T = TypeVar("T")
S = TypeVar("S", bound="ServerProcess")
_LOG_MARK = "--- tessera: starting "

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RunAs:
    """An unprivileged user a server runs as when we are root."""

    name: str
    uid: int
    gid: int

    @property
    def gids(self) -> list[int]:
        return os.getgrouplist(self.name, self.gid)


def server_user() -> RunAs | None:
    """The user PostgreSQL must run as: ``None`` when not root (run as ourselves).

    As root: the ``postgres`` system user if it exists, else ``tessera`` (created with
    ``useradd --system`` when missing).
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "tessera"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return RunAs(name, entry.pw_uid, entry.pw_gid)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", "tessera"],
        check=True, capture_output=True,
    )  # fmt: skip
    entry = pwd.getpwnam("tessera")
    return RunAs("tessera", entry.pw_uid, entry.pw_gid)


def check_traversable(path: Path, user: RunAs) -> None:
    """Raise unless ``user`` can enter every folder above ``path`` (pytest's tmp is 0700)."""
    gids = set(user.gids)
    for folder in reversed(path.parents):
        st = folder.stat()
        if st.st_uid == user.uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid in gids:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            owner = _owner_name(st.st_uid)
            raise RuntimeError(
                f"PostgreSQL runs as user {user.name!r}, which cannot enter {folder} "
                f"(owner {owner}, mode {st.st_mode & 0o7777:04o}). Put the data folder under "
                f"a path every user can traverse (e.g. made with tempfile.mkdtemp + chmod 0711), "
                f"or run `chmod o+x {folder}`."
            )


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def chown_tree(path: Path, user: RunAs) -> None:
    """Give ``path`` and everything below it to ``user`` (only where it differs)."""
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            st = os.lstat(name)
            if (st.st_uid, st.st_gid) != (user.uid, user.gid):
                os.lchown(name, user.uid, user.gid)


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel send ``sig`` when we die (main thread only:
    the signal follows the forking *thread*, and a pool thread may exit at any time)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the child

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return preexec


def child_kwargs(death_signal: int, user: RunAs | None = None) -> dict[str, object]:
    """Keyword arguments for ``subprocess.Popen`` / ``asyncio.create_subprocess_exec``."""
    kwargs: dict[str, object] = {
        "start_new_session": True,
        "preexec_fn": _die_with_parent(death_signal),
    }
    if user is not None:
        kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
    return kwargs


def spawn(
    argv: list[str],
    log_path: Path,
    *,
    death_signal: int = signal.SIGTERM,
    user: RunAs | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | str = "/",
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log_path`` (after a marker line)."""
    with open(log_path, "ab") as log:
        log.write(f"{_LOG_MARK}{shlex.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(  # type: ignore[call-overload]
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            **child_kwargs(death_signal, user),
        )


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines the latest start wrote to ``path``."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    text = text[max(text.rfind(_LOG_MARK), 0) :]
    return "\n".join(text.splitlines()[-lines:])


class PortBusy(RuntimeError):
    """The server exited because another process took its port first."""


def on_free_port(launch: Callable[[int], T], port: int | None, attempts: int = 3) -> T:
    """``launch(port)``; when no port was asked for, retry on another free port if the one
    picked was taken in the meantime (parallel test runs)."""
    for attempt in range(attempts):
        try:
            return launch(port or free_port())
        except PortBusy:
            if port is not None or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def pid_alive(pid: int) -> bool:
    """True if a process with this PID exists (zombies included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_until(
    ready: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    what: str,
    log_path: Path,
    timeout: float = 60.0,
) -> None:
    """Poll ``ready()`` until true; raise with the log tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if proc.poll() is not None:
            tail = log_tail(log_path)
            error = PortBusy if "address already in use" in tail.lower() else RuntimeError
            raise error(
                f"{what} exited with code {proc.returncode} while starting; log {log_path}:\n{tail}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{what} did not become ready within {timeout:.0f}s; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


class ServerProcess:
    """A server we started and hold the PID of; ``stop()`` signals that PID and reaps it."""

    name = "server"
    stop_signal: int = signal.SIGTERM

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self._proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def stop(self, timeout: float = 60.0) -> None:
        """Signal the server by PID, wait for it to exit; SIGKILL after ``timeout`` seconds."""
        if self._proc.poll() is None:
            try:
                os.kill(self.pid, self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self._proc.wait()
        self._stopped()

    def _stopped(self) -> None:
        """Hook run once the process is gone."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} running={self.running}>"


def started(server: S, ready: Callable[[], bool], what: str, timeout: float) -> S:
    """Wait until ``ready()``; stop ``server`` and re-raise if it never gets there."""
    try:
        wait_until(ready, server._proc, what, server.log_path, timeout)
    except BaseException:
        server.stop()
        raise
    return server
