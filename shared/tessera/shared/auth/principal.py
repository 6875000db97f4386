"""The caller of a request as every service sees it.

Permissions (issue #10, README "Security"):

=========  ============================================================================
read       QIDO-RS, WADO-RS (instances, metadata, bulk data, frames, rendered,
           thumbnails), WADO-URI
write      STOW-RS
delete     deleting studies, series, instances
admin      shards, rebalance, API keys, study labels, the audit trail
=========  ============================================================================

Labels limit what a credential sees: ``labels is None`` sees every study; a set sees
only studies carrying at least one of those labels, and what it stores gets them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Permission(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    ADMIN = "admin"


ALL_PERMISSIONS: frozenset[Permission] = frozenset(Permission)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``subject``: the user or machine (OIDC ``sub``, an API key's id); ``client_id``: the
    OAuth client it came through (``azp`` / ``client_id``), empty for API keys;
    ``method``: how it was authenticated (``oidc``, ``api-key``, ``open``, ``internal``).
    """

    subject: str
    permissions: frozenset[Permission]
    labels: frozenset[str] | None = None
    client_id: str = ""
    method: str = ""

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions

    def sees(self, study_labels: frozenset[str] | set[str] | list[str]) -> bool:
        """True if a study with ``study_labels`` is visible to this caller."""
        return self.labels is None or not self.labels.isdisjoint(study_labels)


# The caller of an archive with no authentication configured (loopback only; see
# tessera.shared.serve): may do anything, sees everything.
OPEN = Principal("anonymous", ALL_PERMISSIONS, None, method="open")
