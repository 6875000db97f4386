"""DCMTK's command-line DIMSE clients (Debian package dcmtk, installed by `make test`)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (Debian package dcmtk; `make deps-test`)")
    return found


def run(name: str, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``name args...``, its output (stdout and stderr together) as text."""
    return subprocess.run(
        [tool(name), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def keys(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """``-k key=value`` arguments of findscu / movescu / getscu."""
    out: list[str] = []
    for key, value in pairs:
        out += ["-k", f"{key}={value}" if value else key]
    return out


# storescu proposes uncompressed Transfer Syntaxes unless told: the option that proposes a
# file's compressed one (and the uncompressed ones), so that it is sent as it is
PROPOSE = {
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2": "-xi",
}


def propose(transfer_syntax: str) -> list[str]:
    option = PROPOSE.get(transfer_syntax)
    return [option] if option else []
