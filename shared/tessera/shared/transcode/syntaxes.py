"""What the transcode workers decode and produce (PS3.5 Annex A Transfer Syntaxes).

Retrieve negotiates against these sets (what it may ask for); the workers check their
encoder table against :data:`COMPRESSED_TARGETS` when they start
(``tessera.transcode.codecs``), so the two sides cannot drift apart.
"""

from __future__ import annotations

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

# What the workers decode: pydicom 3 with the pylibjpeg plugins (libjpeg, openjpeg, rle)
# and imagecodecs installed in their image.
DECODABLE: frozenset[str] = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.4.203",  # HTJ2K
        RLE_LOSSLESS,
    }
)

# The compressed Transfer Syntaxes the workers encode. Whether a given instance fits one
# (8-bit for JPEG Baseline, unsigned for the DCT JPEG processes...) only the worker
# knows: a target it cannot hold the pixels in is refused by the worker (406).
COMPRESSED_TARGETS: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline (8-bit, lossy)
        "1.2.840.10008.1.2.4.51",  # JPEG Extended (12-bit, lossy)
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000 (lossy)
        "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
        "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
        "1.2.840.10008.1.2.4.203",  # HTJ2K (lossy)
        RLE_LOSSLESS,
    }
)

# What retrieve asks the workers to produce for whole instances: the DICOMweb default
# (PS3.18 Table 8.7.3-2) and the compressed ones. The workers also make Implicit VR
# Little Endian, which PS3.18 8.7.3 says shall not be used with web services, so it is
# never asked for over the web.
TARGETS: frozenset[str] = frozenset({EXPLICIT_VR_LITTLE_ENDIAN}) | COMPRESSED_TARGETS

# What the frame task produces: a frame's native pixel data (PS3.18 Table 8.7.3-4) or its
# bitstream in a compressed Transfer Syntax (Table 8.7.3-5).
FRAME_TARGETS: frozenset[str] = frozenset({EXPLICIT_VR_LITTLE_ENDIAN}) | COMPRESSED_TARGETS


def can_transcode(source_ts: str, target_ts: str) -> bool:
    """True if an instance stored in ``source_ts`` can be converted to ``target_ts``."""
    return source_ts != target_ts and source_ts in DECODABLE and target_ts in TARGETS


def can_transcode_frame(source_ts: str, target_ts: str) -> bool:
    """True if the frame task makes a frame stored in ``source_ts`` in ``target_ts``; for
    a compressed ``target_ts`` that is the stored one it cuts the frame's bitstream out of
    the object (the frames the index has no range for)."""
    if source_ts not in DECODABLE or target_ts not in FRAME_TARGETS:
        return False
    return source_ts != target_ts or target_ts in COMPRESSED_TARGETS
