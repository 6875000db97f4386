"""What every service handler is given: the gateway's parts, and the calling node."""

from __future__ import annotations

from dataclasses import dataclass

from pynetdicom.events import Event

from tessera.dimse.archive import Archive
from tessera.dimse.nodes import DicomNode, NodeRegistry
from tessera.shared.settings import Settings

NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.15: Refused: Not Authorized


@dataclass(frozen=True)
class Gateway:
    settings: Settings
    nodes: NodeRegistry
    archive: Archive

    @property
    def ae_title(self) -> str:
        return self.settings.dimse_ae_title.strip()

    def node_of(self, event: Event) -> DicomNode | None:
        """The registered node of the association's calling AE (None: removed since the
        association was accepted; it then may do nothing)."""
        return self.nodes.get(str(event.assoc.requestor.ae_title))
