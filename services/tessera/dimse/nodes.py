"""The registry of known Application Entities (README "DIMSE").

A node is a remote AE: its title, the address it calls from and is called at, its port
(a node with one can be a C-MOVE destination and an SCU target), what it may ask of
Tessera (``operations``), and the labels of the studies it sees. Each node maps to a
:class:`~tessera.shared.auth.Principal` (``ae:TITLE``), the credential its DIMSE
requests are authorized and audited as, like an API key's.

The rows live in PostgreSQL; every gateway keeps a snapshot in memory, refreshed from the
table every ``POLL`` seconds and at once after a change through its own API, so the
association threads read it without I/O.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from tessera.shared.auth import Permission, Principal
from tessera.shared.errors import BadRequest

log = logging.getLogger(__name__)

OPERATIONS = ("echo", "store", "find", "move", "get")
POLL = 2.0  # seconds between refreshes of the snapshot
# PS3.5 Table 6.2-1, AE: 16 characters at most, no backslash, no control characters;
# leading and trailing spaces are not significant, and it is not only spaces
_AE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")
_HOST = re.compile(r"[A-Za-z0-9.:_\-\[\]%]{1,253}")
_COLUMNS = "ae_title, host, port, operations, labels, tls, description"


def check_ae_title(title: str) -> str:
    """``title`` without its insignificant spaces; :class:`BadRequest` if not an AE."""
    if not _AE.fullmatch(title) or not title.strip():
        raise BadRequest(
            "an AE title is 1 to 16 characters, no backslash or control character, not "
            "only spaces (PS3.5 Table 6.2-1)"
        )
    return title.strip()


@dataclass(frozen=True)
class DicomNode:
    ae_title: str
    host: str = ""
    port: int | None = None
    operations: frozenset[str] = frozenset({"echo"})
    labels: frozenset[str] | None = None
    tls: bool = False
    description: str = ""
    principal: Principal = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        permissions = set()
        if "store" in self.operations:
            permissions.add(Permission.WRITE)
        if self.operations & {"find", "move", "get"}:
            permissions.add(Permission.READ)
        object.__setattr__(
            self,
            "principal",
            Principal(f"ae:{self.ae_title}", frozenset(permissions), self.labels, method="dimse"),
        )

    @property
    def principal_read(self) -> Principal:
        """What the node may be sent (C-STORE to it): the studies its labels allow."""
        return Principal(
            f"ae:{self.ae_title}", frozenset({Permission.READ}), self.labels, method="dimse"
        )

    def may(self, operation: str) -> bool:
        return operation in self.operations

    @property
    def callable(self) -> bool:
        return bool(self.host) and self.port is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "aeTitle": self.ae_title,
            "host": self.host,
            "port": self.port,
            "operations": sorted(self.operations, key=OPERATIONS.index),
            "labels": None if self.labels is None else sorted(self.labels),
            "tls": self.tls,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, ae_title: str, doc: Any) -> DicomNode:
        """A node from the admin API's JSON; :class:`BadRequest` with what is wrong."""
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
        unknown = set(doc) - {"aeTitle", "host", "port", "operations", "labels", "tls",
                              "description"}  # fmt: skip
        if unknown:
            raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
        title = check_ae_title(ae_title)
        if "aeTitle" in doc and str(doc["aeTitle"]).strip() != title:
            raise BadRequest("aeTitle differs from the AE title in the path")
        host = doc.get("host", "")
        if not isinstance(host, str) or (host and not _HOST.fullmatch(host)):
            raise BadRequest("host: an IP address or a DNS name ('' = any address)")
        port = doc.get("port")
        if port is not None and (
            not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536
        ):
            raise BadRequest("port: 1 to 65535, or null")
        ops = doc.get("operations", ["echo"])
        if not isinstance(ops, list) or any(op not in OPERATIONS for op in ops):
            raise BadRequest(f"operations: a list of {', '.join(OPERATIONS)}")
        labels = doc.get("labels")
        if labels is not None and not (
            isinstance(labels, list) and all(isinstance(x, str) and x for x in labels)
        ):
            raise BadRequest("labels: null (every study) or a list of label strings")
        tls = doc.get("tls", False)
        description = doc.get("description", "")
        if not isinstance(tls, bool) or not isinstance(description, str):
            raise BadRequest("tls: true or false; description: a string")
        return cls(
            title,
            host,
            port,
            frozenset(ops),
            None if labels is None else frozenset(labels),
            tls,
            description[:200],
        )

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> DicomNode:
        labels = row["labels"]
        return cls(
            row["ae_title"],
            row["host"],
            row["port"],
            frozenset(row["operations"]),
            None if labels is None else frozenset(labels),
            row["tls"],
            row["description"],
        )


class NodeRegistry:
    """The table, and the snapshot the association threads read (:meth:`get`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._nodes: dict[str, DicomNode] = {}
        self._loaded = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self.healthy = False

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="dimse-node-poll")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL)
            try:
                await self.refresh()
            except (OSError, asyncpg.PostgresError, TimeoutError) as e:
                # keep serving the last snapshot; /readyz says the database is away
                self.healthy = False
                log.warning("AE registry not refreshed: %s", e)

    async def refresh(self) -> None:
        rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM dimse_node", timeout=5)
        self._nodes = {r["ae_title"]: DicomNode.from_row(r) for r in rows}
        self.healthy = True
        self._loaded.set()

    def get(self, ae_title: str) -> DicomNode | None:
        """The node of a calling AE title (its insignificant spaces ignored)."""
        return self._nodes.get(ae_title.strip())

    def all(self) -> list[DicomNode]:
        return sorted(self._nodes.values(), key=lambda n: n.ae_title)

    async def put(self, node: DicomNode) -> bool:
        """Register or replace ``node``; True if it is new."""
        created = await self.pool.fetchval(
            f"INSERT INTO dimse_node ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (ae_title) DO UPDATE SET host = $2, port = $3, operations = $4,"
            " labels = $5, tls = $6, description = $7, updated_at = now()"
            " RETURNING xmax = 0",
            node.ae_title,
            node.host,
            node.port,
            sorted(node.operations),
            None if node.labels is None else sorted(node.labels),
            node.tls,
            node.description,
        )
        await self.refresh()
        return bool(created)

    async def delete(self, ae_title: str) -> bool:
        done = await self.pool.execute("DELETE FROM dimse_node WHERE ae_title = $1", ae_title)
        await self.refresh()
        return done != "DELETE 0"
