"""A steady STOW-RS + QIDO-RS + WADO-RS load on a running archive, for the fault tests
(issue 15): what every request got is recorded and classified, and every instance a
STOW said was stored is remembered with its bytes, to be checked afterwards.

Each answer is one of:

    ok           2xx (a STOW with every instance stored)
    a700         a STOW answered 202/409 whose failed instances all carry 0xA700 (Out of
                 Resources, PS3.18 Table I.2-2): the client is told to send them again
    unavailable  503 with a Retry-After header
    refused      no answer: the connection was refused or lost (only acceptable while
                 the process the client talks to, the router, is down)
    bad          anything else: a 500, a 503 without Retry-After, a 4xx, a wrong body
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from pydicom.uid import generate_uid

from tests.support.dicomgen import make_instance, multipart

ALL_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'
A700 = 0xA700


@dataclass(frozen=True)
class Outcome:
    at: float  # time.monotonic() of the answer
    kind: str  # "stow", "qido", "wado", "rendered"
    verdict: str  # see the module's docstring
    detail: str  # status and a few words of the body, for the failure message


@dataclass
class Stored:
    study: str
    series: str
    sop: str
    data: bytes


@dataclass
class Load:
    """Client threads on ``base_url`` (the DICOMweb root): ``stowers`` storing one new
    instance per request (a new study every ``per_study``), ``readers`` alternating
    QIDO-RS searches, WADO-RS retrieves and renderings of stored instances."""

    base_url: str
    stowers: int = 2
    readers: int = 1
    per_study: int = 5
    timeout: float = 90.0
    outcomes: list[Outcome] = field(default_factory=list)
    stored: list[Stored] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    def __enter__(self) -> Load:
        for n in range(self.stowers):
            self._threads.append(threading.Thread(target=self._stow_loop, name=f"stow-{n}"))
        for n in range(self.readers):
            self._threads.append(threading.Thread(target=self._read_loop, name=f"read-{n}"))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the clients (each ends its request in flight); again does nothing."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 10)

    def record(self, kind: str, verdict: str, detail: str) -> None:
        with self._lock:
            self.outcomes.append(Outcome(time.monotonic(), kind, verdict, detail))

    def between(self, start: float, end: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if start <= o.at <= end]

    def verdicts(self, start: float = 0.0, end: float = float("inf")) -> Counter[str]:
        return Counter(f"{o.kind} {o.verdict}" for o in self.between(start, end))

    # -------------------------------------------------------------------- clients
    def _stow_loop(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=self.timeout) as client:
            study, series = generate_uid(), generate_uid()
            while not self._stop.is_set():
                n = next(self._numbers)
                if n % self.per_study == 0:
                    study, series = generate_uid(), generate_uid()
                sop = generate_uid()
                data = make_instance(study=study, series=series, sop=sop, instance_number=n)
                body, content_type = multipart([data])
                try:
                    r = client.post(
                        "/studies", content=body, headers={"Content-Type": content_type}
                    )
                except httpx.TransportError as e:
                    self.record("stow", "refused", type(e).__name__)
                    continue
                verdict = stow_verdict(r, sop)
                if verdict == "ok":
                    with self._lock:
                        self.stored.append(Stored(study, series, sop, data))
                self.record("stow", verdict, f"{r.status_code} {r.text[:200]}")

    def _read_loop(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=self.timeout) as client:
            for turn in itertools.count():
                if self._stop.is_set():
                    return
                with self._lock:
                    target = self.stored[-1 - turn % len(self.stored)] if self.stored else None
                if target is None:
                    time.sleep(0.1)
                    continue
                instance = f"/studies/{target.study}/series/{target.series}/instances/{target.sop}"
                kind = ("qido", "wado", "rendered")[turn % 3]
                try:
                    if kind == "qido":
                        r = client.get("/studies", params={"StudyInstanceUID": target.study})
                    elif kind == "wado":
                        r = client.get(instance, headers={"Accept": ALL_TS})
                    else:
                        r = client.get(instance + "/rendered", headers={"Accept": "image/jpeg"})
                except httpx.TransportError as e:
                    self.record(kind, "refused", type(e).__name__)
                    continue
                self.record(kind, read_verdict(r), f"{r.status_code} {r.text[:200]}")


def stow_verdict(r: httpx.Response, sop: str) -> str:
    """``ok`` when ``sop`` is in the ReferencedSOPSequence of a 200; ``a700`` when it is
    in the FailedSOPSequence with 0xA700 (202/409); else as :func:`read_verdict`."""
    if r.status_code in (200, 202, 409) and "json" in r.headers.get("content-type", ""):
        doc = r.json()
        refs = [_value(i, "00081155") for i in doc.get("00081199", {}).get("Value", [])]
        fails = {
            _value(i, "00081155"): _value(i, "00081197")
            for i in doc.get("00081198", {}).get("Value", [])
        }
        if r.status_code == 200 and refs == [sop]:
            return "ok"
        if r.status_code in (202, 409) and fails.get(sop) == A700:
            return "a700"
        return "bad"
    return read_verdict(r)


def _value(item: dict, tag: str) -> object:
    """The first value of ``tag`` in a DICOM JSON item, None when it has none."""
    return (item.get(tag, {}).get("Value") or [None])[0]


def read_verdict(r: httpx.Response) -> str:
    if 200 <= r.status_code < 300:
        return "ok"
    if r.status_code == 503 and r.headers.get("Retry-After"):
        return "unavailable"
    return "bad"


def check_stored(base_url: str, stored: list[Stored]) -> list[str]:
    """What is wrong with the acknowledged instances: each must be found exactly once by
    QIDO-RS and come back byte for byte from WADO-RS. Empty when all is well."""
    problems = []
    by_study: dict[str, list[Stored]] = {}
    for s in stored:
        by_study.setdefault(s.study, []).append(s)
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for study, instances in by_study.items():
            r = client.get(f"/studies/{study}/instances", params={"includefield": "00080018"})
            if r.status_code != 200:
                problems.append(f"study {study}: QIDO {r.status_code}")
                continue
            found = Counter(i["00080018"]["Value"][0] for i in r.json())
            for s in instances:
                if found[s.sop] != 1:
                    problems.append(f"{s.sop}: found {found[s.sop]} times")
                    continue
                url = f"/studies/{study}/series/{s.series}/instances/{s.sop}"
                got = client.get(url, headers={"Accept": ALL_TS})
                if got.status_code != 200 or s.data not in got.content:
                    problems.append(f"{s.sop}: WADO {got.status_code}, bytes differ")
    return problems
