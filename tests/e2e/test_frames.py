"""Retrieve Frames through the whole cluster (PS3.18 10.4): stored with STOW-RS, read back
through the router by dicomweb-client and with OHIF's Accept, revalidated with
If-None-Match, and converted by the transcode process."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pydicom
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array

from tests.support.dicomgen import multipart, split_multipart

CINE = Path(__file__).resolve().parent.parent / "data" / "corpus" / "Issue16.dcm"  # 34 JPEG
OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"
EVRLE = "1.2.840.10008.1.2.1"


async def test_frames_through_the_router(cluster, client):
    data = CINE.read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    frames = list(generate_frames(ds.PixelData, number_of_frames=34))
    body, ctype = multipart([data])
    r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    url = "/studies/{}/series/{}/instances/{}/frames".format(*uids)

    def with_dicomweb_client() -> list[bytes]:
        web = DICOMwebClient(url=cluster.base_url)
        return web.retrieve_instance_frames(
            *uids, frame_numbers=[2, 34], media_types=(("application/octet-stream", "*"),)
        )

    assert await asyncio.to_thread(with_dicomweb_client) == [frames[1], frames[33]]

    r = await client.get(f"{url}/3", headers={"Accept": OHIF})
    assert r.status_code == 200, r.text
    ((headers, payload),) = split_multipart(r.content, r.headers["content-type"])
    # the JPEG frame is labelled image/jpeg (PS3.18 Table 8.7.3-5), OHIF reads it as is
    assert (
        headers["content-type"] == f"image/jpeg; transfer-syntax={ds.file_meta.TransferSyntaxUID}"
    )
    assert payload == frames[2]
    again = await client.get(
        f"{url}/3", headers={"Accept": OHIF, "If-None-Match": r.headers["etag"]}
    )
    assert again.status_code == 304 and again.headers["etag"] == r.headers["etag"]

    r = await client.get(
        f"{url}/34", headers={"Accept": 'multipart/related; type="application/octet-stream"'}
    )
    assert r.status_code == 200, r.text
    ((headers, payload),) = split_multipart(r.content, r.headers["content-type"])
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={EVRLE}"
    assert payload == pixel_array(ds, index=33).tobytes()
