"""DICOM status codes used by Tessera, as data (PS3.18 Annex I, PS3.4 B.2.3, PS3.7 C).

Store Instances Response Failure Reason values: PS3.18 Table I.2-2.
Warning Reason values: PS3.18 Table I.2-1.
"""

from __future__ import annotations

from enum import IntEnum


class FailureReason(IntEnum):
    # PS3.18 Table I.2-2
    REFUSED_OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
    PROCESSING_FAILURE = 0x0110
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    # PS3.7 Annex C.5 (C.5.11): Duplicate SOP Instance, used when a different object
    # arrives under a SOPInstanceUID that is already stored (duplicate_policy=reject)
    DUPLICATE_SOP_INSTANCE = 0x0111
    # PS3.7 Annex C.5 (C.5.13): Refused: Not Authorized, for a storer whose credential's
    # labels do not reach the study (README "Security")
    NOT_AUTHORIZED = 0x0124


class WarningReason(IntEnum):
    # PS3.18 Table I.2-1
    COERCION_OF_DATA_ELEMENTS = 0xB000
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xB007
    ELEMENTS_DISCARDED = 0xB006
