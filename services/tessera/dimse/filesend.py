"""Sub-operations sent straight from the file the archive gave, never decoded.

pynetdicom's C-GET and C-MOVE service classes want a pydicom ``Dataset`` from the
handler, which they encode again element by element: most of the gateway's time per
instance. ``Association.send_c_store`` can also send a Part 10 file as it is, read in
PDU-sized pieces (``STORE_SEND_CHUNKED_DATASET``). So the handler yields a
:class:`FileBacked` data set (just the two UIDs pynetdicom reports, and the file's
path), and :func:`send_files` makes the association's ``send_c_store`` send that file.
The file's Transfer Syntax is chosen to be one the receiver accepted (the archive
decodes to it when needed), since a file is sent without conversion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association


class FileBacked(Dataset):
    """SOP Class and Instance UIDs of the Part 10 file at ``path``."""

    def __init__(self, path: Path, sop_class: str, sop_instance: str) -> None:
        super().__init__()
        self.SOPClassUID = sop_class
        self.SOPInstanceUID = sop_instance
        self.tessera_path = path


def send_files(assoc: Association) -> None:
    """Let ``assoc`` send :class:`FileBacked` data sets from their files (with
    ``STORE_SEND_CHUNKED_DATASET``, which :func:`tessera.dimse.server.build_ae` sets: it
    applies only to a path)."""
    original = assoc.send_c_store

    def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
        if isinstance(dataset, FileBacked):
            return original(dataset.tessera_path, *args, **kwargs)
        return original(dataset, *args, **kwargs)

    assoc.send_c_store = send_c_store  # type: ignore[method-assign]
