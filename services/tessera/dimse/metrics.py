"""The gateway's Prometheus metrics (``/metrics``, README "Metrics")."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ASSOCIATIONS = Counter(
    "tessera_dimse_associations",
    "Associations requested of the gateway: accepted, rejected (AE title rules, "
    "presentation contexts, the association limit) or aborted",
    ["result"],
)
ACTIVE = Gauge("tessera_dimse_associations_active", "Associations open now")
OPERATIONS = Counter(
    "tessera_dimse_operations",
    "DIMSE requests answered as an SCP, by service and final status "
    "(success, warning, failure, cancel)",
    ["service", "status"],
)
BYTES = Counter(
    "tessera_dimse_bytes",
    "Data set bytes received by C-STORE and sent by C-GET / C-MOVE sub-operations",
    ["direction"],
)


def status_class(status: int) -> str:
    """PS3.7 C: the category of a DIMSE status code."""
    if status == 0x0000:
        return "success"
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "warning"
    if status == 0xFE00:
        return "cancel"
    if status in (0xFF00, 0xFF01):
        return "pending"
    return "failure"
