"""Stored data that cannot be decoded is refused with a reason, never failed.

Instances are stored as they were sent (PS3.18 10.5: the origin server keeps what it
accepted), so a read may meet pixel data whose description does not hold: Bits Allocated
missing or of another VR, Rows larger than the data, fragments cut short, a sequence
nested 500 deep. pydicom and the codecs then raise whatever their code meets
(AttributeError, TypeError, struct.error, RecursionError...). Such an error is a fact
about the object, not a failure of the service: the task raises the refusal the caller
maps to 406 (Not Acceptable, with the reason), and the traceback is logged for the
operator (issue 15: reads never answer 5xx on stored data).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from pydicom.errors import BytesLengthException, InvalidDicomError

from tessera.shared.errors import TesseraError, UnsupportedTransferSyntax

log = logging.getLogger(__name__)

DATA_ERRORS = (
    RuntimeError,  # RecursionError too
    NotImplementedError,
    ValueError,
    AttributeError,
    KeyError,
    TypeError,
    IndexError,
    OverflowError,
    ZeroDivisionError,
    struct.error,
    BytesLengthException,  # a value whose length does not fit its VR
    InvalidDicomError,
)


@contextmanager
def refused_as(
    what: str, refusal: type[TesseraError] = UnsupportedTransferSyntax
) -> Iterator[None]:
    """Inside: a data error becomes ``refusal("<what>: <why>")``; Tessera's own errors
    (NotFound, NotAcceptable...) pass as they are."""
    try:
        yield
    except TesseraError:
        raise
    except RecursionError:  # a sequence within a sequence... hundreds of levels deep
        raise refusal(f"{what}: the data set's sequences are nested too deeply to decode") from None
    except DATA_ERRORS as e:
        log.warning("%s: refused: %s: %s", what, type(e).__name__, e, exc_info=True)
        raise refusal(f"{what}: {type(e).__name__}: {e}") from e
