"""Every way a viewer or a peer reads one stored instance (PS3.18 10.4 retrieve, 8.7
media types, rendered and thumbnail resources), for the tests that claim reads never fail
on what STOW accepted (issue 15): each answer is 2xx, or a 4xx that says why; never 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

ALL_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'
DEFAULT_TS = 'multipart/related; type="application/dicom"'
FRAMES_AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
FRAMES_NATIVE = 'multipart/related; type="application/octet-stream"'


def bulkdata_uris(element: Any) -> Iterator[str]:
    """The BulkDataURIs in a DICOM JSON object or array, depth first."""
    if isinstance(element, dict):
        if isinstance(element.get("BulkDataURI"), str):
            yield element["BulkDataURI"]
        for value in element.values():
            yield from bulkdata_uris(value)
    elif isinstance(element, list):
        for value in element:
            yield from bulkdata_uris(value)


def instance_reads(url: str) -> list[tuple[str, str, dict[str, str]]]:
    """(name, URL, headers) of the reads of the instance at ``url`` (its RetrieveURL)
    that need nothing from an earlier answer."""
    series = url.rsplit("/instances/", 1)[0]
    return [
        ("metadata", f"{url}/metadata", {"Accept": "application/dicom+json"}),
        ("series metadata", f"{series}/metadata", {"Accept": "application/dicom+json"}),
        ("instance as stored", url, {"Accept": ALL_TS}),
        ("instance, default syntax", url, {"Accept": DEFAULT_TS}),
        ("frame 1 as stored", f"{url}/frames/1", {"Accept": FRAMES_AS_STORED}),
        ("frame 1 native", f"{url}/frames/1", {"Accept": FRAMES_NATIVE}),
        ("frames 1,2", f"{url}/frames/1,2", {"Accept": FRAMES_AS_STORED}),
        ("rendered", f"{url}/rendered", {"Accept": "image/jpeg"}),
        ("rendered png", f"{url}/rendered", {"Accept": "image/png"}),
        ("thumbnail", f"{url}/thumbnail", {"Accept": "image/jpeg"}),
        ("frame 1 rendered", f"{url}/frames/1/rendered", {"Accept": "image/jpeg"}),
    ]


def bulkdata_reads(metadata: Any, limit: int = 4) -> list[tuple[str, str, dict[str, str]]]:
    """Reads of the first ``limit`` bulk data URIs of an instance's metadata, as stored
    and uncompressed."""
    reads = []
    for uri in list(bulkdata_uris(metadata))[:limit]:
        reads.append(("bulkdata", uri, {"Accept": FRAMES_AS_STORED}))
        reads.append(("bulkdata octet-stream", uri, {"Accept": FRAMES_NATIVE}))
    return reads
