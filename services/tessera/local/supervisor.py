"""Run service processes side by side, prefix their output, restart what dies, and stop
them together.

A child that exits on its own is reported loudly and started again after a back-off
(1 s, doubling to 30 s while it keeps dying within a minute of its start; back to 1 s
once it has run a minute), the others running on (issue 15: the archive stops only when
asked to). With ``restart=False`` the first exit stops every other child instead and
:func:`supervise` returns 1. SIGINT/SIGTERM to the supervisor stop everything (SIGTERM
by PID, SIGKILL after a grace period) and it returns 0. Children run in their own
sessions, so a Ctrl-C in the terminal reaches only the supervisor, which then stops them
in reverse start order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import httpx

from tessera.local._child import child_kwargs

NAME_WIDTH = 13  # wider names (shard-1.index-worker) just push the bar right


@dataclass(frozen=True)
class Service:
    """One child: a display name, its command line, and variables of its own (which win
    over the environment :func:`supervise` gives every child)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def module(cls, name: str, module: str, env: Mapping[str, str] | None = None) -> Service:
        """``python -m module`` with this interpreter."""
        return cls(name, [sys.executable, "-m", module], dict(env or {}))


def say(message: str, name: str = "tessera", out: TextIO | None = None) -> None:
    """One line of output, prefixed with ``name``."""
    stream = out or sys.stdout
    stream.write(f"{name:<{NAME_WIDTH}}| {message}\n")
    stream.flush()


async def _pump(name: str, stream: asyncio.StreamReader, out: TextIO | None) -> None:
    """Copy a child's output line by line, prefixed (long lines are cut in 64 KiB pieces)."""
    pending = b""
    while chunk := await stream.read(65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if len(pending) >= 65536:
            lines.append(pending)
            pending = b""
        for line in lines:
            say(line.decode(errors="replace").rstrip("\r"), name, out)
    if pending:
        say(pending.decode(errors="replace"), name, out)


async def _wait_ready(
    url: str, on_ready: Callable[[], None], verify: ssl.SSLContext | bool = True
) -> None:
    """Poll ``url`` (a ``/healthz``) until it answers 200, then call ``on_ready`` once."""
    async with httpx.AsyncClient(timeout=2.0, trust_env=False, verify=verify) as client:
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    on_ready()
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)


@dataclass
class _Child:
    service: Service
    proc: asyncio.subprocess.Process
    pump: asyncio.Task[None]  # copies its output
    exited: asyncio.Task[int]  # its proc.wait()
    started: float = 0.0  # loop time of its start
    failures: int = 0  # exits in a row within STABLE seconds of their start


@dataclass(frozen=True)
class Watched:
    """A server the supervisor did not start as a child but keeps alive (PostgreSQL and
    Redis of ``make run``): ``running()`` polls its PID, ``restart()`` starts it again
    (blocking; run in a thread) and returns the new PID."""

    name: str
    running: Callable[[], bool]
    restart: Callable[[], int]


BACKOFF = (1.0, 30.0)  # first and longest wait before a dead child is started again
STABLE = 60.0  # seconds a child must run for its back-off to start over


async def _spawn(service: Service, env: Mapping[str, str], out: TextIO | None) -> _Child:
    proc = await asyncio.create_subprocess_exec(
        *service.argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**env, **service.env},
        **child_kwargs(signal.SIGTERM),  # type: ignore[arg-type]
    )
    assert proc.stdout is not None
    say(f"started {service.name} (pid {proc.pid}): {' '.join(service.argv)}", out=out)
    pump = asyncio.create_task(_pump(service.name, proc.stdout, out))
    started = asyncio.get_running_loop().time()
    return _Child(service, proc, pump, asyncio.create_task(proc.wait()), started)


async def _stop(children: list[_Child], grace: float, out: TextIO | None) -> None:
    """SIGTERM each live child by PID (reverse start order), SIGKILL those that linger,
    then let their output drain."""
    for child in reversed(children):
        if child.proc.returncode is None:
            say(f"stopping {child.service.name} (pid {child.proc.pid})", out=out)
            try:
                os.kill(child.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for child in children:
        try:
            await asyncio.wait_for(asyncio.shield(child.exited), grace)
        except TimeoutError:
            say(f"{child.service.name} ignored SIGTERM for {grace:.0f}s: SIGKILL", out=out)
            os.kill(child.proc.pid, signal.SIGKILL)
            await child.exited
    pumps = [child.pump for child in children]
    if pumps:  # grandchildren may hold a pipe open: do not wait for them forever
        await asyncio.wait(pumps, timeout=2.0)


def _report_restart(child: _Child, delay: float, out: TextIO | None) -> None:
    bar = "!" * 72
    say(bar, out=out)
    say(f"{child.service.name} (pid {child.proc.pid}) EXITED with code {child.proc.returncode}:"
        f" starting it again in {delay:.0f}s (exit #{child.failures} in a row). Lines"
        f" prefixed {child.service.name!r} say why.", out=out)  # fmt: skip
    say(bar, out=out)


async def _keep_alive(
    watched: Sequence[Watched],
    stopping: asyncio.Task[object],
    backoff: tuple[float, float],
    stable: float,
    out: TextIO | None,
) -> None:
    """Poll each watched server every second; start one that died again, with the same
    back-off as the children."""
    loop = asyncio.get_running_loop()
    since = {w.name: loop.time() for w in watched}
    failures = dict.fromkeys(since, 0)
    while not stopping.done():
        await asyncio.sleep(1.0)
        for w in watched:
            if stopping.done() or w.running():
                continue
            lived = loop.time() - since[w.name]
            failures[w.name] = 1 if lived >= stable else failures[w.name] + 1
            delay = min(backoff[1], backoff[0] * 2 ** (failures[w.name] - 1))
            bar = "!" * 72
            say(bar, out=out)
            say(f"{w.name} is not running: starting it again in {delay:.0f}s (exit"
                f" #{failures[w.name]} in a row); its log says why", out=out)  # fmt: skip
            say(bar, out=out)
            await asyncio.sleep(delay)
            if stopping.done():
                return
            try:
                pid = await asyncio.to_thread(w.restart)
            except Exception as e:
                say(f"{w.name} did not start: {e}", out=out)
            else:
                say(f"started {w.name} again (pid {pid})", out=out)
            since[w.name] = loop.time()


def _report_exits(dead: list[_Child], out: TextIO | None) -> None:
    bar = "!" * 72
    say(bar, out=out)
    for child in dead:
        say(f"{child.service.name} (pid {child.proc.pid}) EXITED with code {child.proc.returncode}",
            out=out)  # fmt: skip
    names = ", ".join(repr(child.service.name) for child in dead)
    say(f"Nothing is restarted: stopping every service. Lines prefixed {names} say why.", out=out)
    say(bar, out=out)


async def supervise(
    services: Sequence[Service],
    env: Mapping[str, str],
    *,
    ready_url: str | None = None,
    on_ready: Callable[[], None] = lambda: None,
    ready_verify: ssl.SSLContext | bool = True,
    grace: float = 20.0,
    out: TextIO | None = None,
    restart: bool = True,
    backoff: tuple[float, float] = BACKOFF,
    stable: float = STABLE,
    watched: Sequence[Watched] = (),
) -> int:
    """Start ``services`` with environment ``env`` and watch them until SIGINT/SIGTERM
    (-> 0), restarting each child that exits; with ``restart=False`` until one exits
    (-> 1). ``on_ready`` runs once ``ready_url`` answers 200. ``watched`` servers are
    polled and started again when they die."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children: list[_Child] = []
    stopping = asyncio.create_task(stop.wait())
    watchers: list[asyncio.Task[object]] = [stopping]
    try:
        for service in services:
            children.append(await _spawn(service, env, out))
        if ready_url is not None:
            watchers.append(asyncio.create_task(_wait_ready(ready_url, on_ready, ready_verify)))
        if watched:
            keeper = _keep_alive(watched, stopping, backoff, stable, out)
            watchers.append(asyncio.create_task(keeper))
        while True:
            await asyncio.wait(
                [stopping, *(c.exited for c in children)], return_when=asyncio.FIRST_COMPLETED
            )
            if stopping.done():
                say("stop requested", out=out)
                await _stop(children, grace, out)
                return 0
            dead = [c for c in children if c.exited.done()]
            await asyncio.wait([c.pump for c in dead], timeout=2.0)  # their last words first
            if not restart:
                _report_exits(dead, out)
                await _stop(children, grace, out)
                return 1
            for child in dead:
                lived = loop.time() - child.started
                failures = 1 if lived >= stable else child.failures + 1
                delay = min(backoff[1], backoff[0] * 2 ** (failures - 1))
                child.failures = failures
                _report_restart(child, delay, out)
                try:
                    await asyncio.wait_for(asyncio.shield(stopping), delay)
                except TimeoutError:
                    pass
                if stopping.done():
                    break
                index = children.index(child)
                fresh = await _spawn(child.service, env, out)
                fresh.failures = failures
                children[index] = fresh
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await _stop(children, grace, out)  # no-op unless starting failed half-way
        tasks: list[asyncio.Task[object]] = [*watchers, *(c.pump for c in children)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
