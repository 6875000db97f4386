"""What a rendered or thumbnail request can show: the instances of a study, series or
instance with what deciding their rendering needs, from the index alone.

Each instance is of one PS3.18 8.7.2 resource category, which fixes its Rendered Media
Types (PS3.18 Table 8.7.4-1, as far as Tessera renders them):

    image  Pixel Data, not video      image/jpeg (default), image/png, image/gif
    pdf    Encapsulated PDF           application/pdf
    video  MPEG-2/MPEG-4/HEVC pixels  none (406)
    other  no Pixel Data (SR, ...)    none (406)

A thumbnail (PS3.18 10.4.1.1.4; payload 10.4.3.3.4: "a meaningful representation",
chosen by the origin server, one image) shows :func:`representative`: for a series, its
middle image instance; for a study, that of its first series with images.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from tessera.retrieve.queries import _FROM, _ORDER, Labels, Target, _where, explain_not_found
from tessera.shared.refs import InstanceRef
from tessera.shared.rendering import IMAGE_MEDIA_TYPES, PDF

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
VIDEO_PREFIX = "1.2.840.10008.1.2.4.10"  # 4.100 to 4.108: MPEG-2, MPEG-4, HEVC (PS3.5 A.4)
OFFERS: dict[str, tuple[str, ...]] = {
    "image": IMAGE_MEDIA_TYPES,
    "pdf": (PDF,),
    "video": (),
    "other": (),
}


@dataclass(frozen=True, slots=True)
class Renderable:
    """One indexed instance, as rendering sees it."""

    ref: InstanceRef
    sop_class_uid: str
    transfer_syntax_uid: str
    storage_key: str
    number_of_frames: int
    has_pixels: bool

    @property
    def category(self) -> str:
        if self.sop_class_uid == ENCAPSULATED_PDF:
            return "pdf"
        if not self.has_pixels:
            return "other"
        if self.transfer_syntax_uid.startswith(VIDEO_PREFIX):
            return "video"
        return "image"

    @property
    def offers(self) -> tuple[str, ...]:
        """The Rendered Media Types of this instance, the default first."""
        return OFFERS[self.category]

    def describe(self) -> str:
        names = {"pdf": "an Encapsulated PDF", "video": "a video", "other": "a non-image"}
        what = names.get(self.category, "an image")
        return f"instance {self.ref.sop_instance_uid} ({what})"


async def renderables(
    pool: asyncpg.Pool, target: Target, labels: Labels = None
) -> list[Renderable]:
    """The instances of ``target`` in retrieval order; :class:`NotFound` if there are none
    (or none the caller's ``labels`` reach)."""
    where, args = _where(target, labels)
    sql = (
        "SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid,"
        " i.sop_class_uid, i.transfer_syntax_uid, i.storage_key, i.number_of_frames,"
        " i.pixel_data IS NOT NULL" + _FROM + where + _ORDER
    )
    async with pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
        if not rows:
            raise await explain_not_found(conn, target, labels)
    return [
        Renderable(
            InstanceRef(r[0], r[1], r[2]),
            sop_class_uid=r[3],
            transfer_syntax_uid=r[4],
            storage_key=r[5],
            number_of_frames=max(r[6] or 1, 1),
            has_pixels=r[7],
        )
        for r in rows
    ]


def representative(instances: list[Renderable]) -> Renderable | None:
    """The middle image instance of the first series (in retrieval order) with images."""
    images = [i for i in instances if i.category == "image"]
    if not images:
        return None
    series = images[0].ref.series_instance_uid
    first_series = [i for i in images if i.ref.series_instance_uid == series]
    return first_series[(len(first_series) - 1) // 2]
