"""One exception tree for every service; :mod:`tessera.shared.http` maps it to HTTP.

    TesseraError                 500  something we did not expect
    ├── BadRequest               400  malformed request (PS3.18 8.5)
    │   ├── MultipartError       400  malformed multipart/related body
    │   └── QueryError           400  unknown or malformed QIDO-RS key or value
    ├── Forbidden                403  the caller may not do this (its permissions, labels)
    ├── NotFound                 404  no such study / series / instance / frame
    │   └── ObjectNotFound       404  storage has no object under that key
    ├── NotAcceptable            406  nothing in Accept can be produced
    │   └── UnsupportedTransferSyntax  406  transcode cannot produce that syntax
    ├── Conflict                 409
    ├── PayloadTooLarge          413  a part or the whole body is over the limit
    ├── UnsupportedMediaType     415  request Content-Type is not one we take
    └── ServiceUnavailable       503  a dependency (database, queue, shard) is down

Per-instance STOW-RS outcomes are not exceptions that reach HTTP: an
:class:`InvalidInstance` carries the PS3.18 Table I.2-2 Failure Reason and
becomes one FailedSOPSequence item.
"""

from __future__ import annotations


class TesseraError(Exception):
    status_code = 500

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason or self.__class__.__name__


class BadRequest(TesseraError):
    status_code = 400


class MultipartError(BadRequest):
    pass


class QueryError(BadRequest):
    pass


class Forbidden(TesseraError):
    status_code = 403


class NotFound(TesseraError):
    status_code = 404


class ObjectNotFound(NotFound):
    pass


class NotAcceptable(TesseraError):
    status_code = 406


class UnsupportedTransferSyntax(NotAcceptable):
    """Transcode cannot convert to (or decode from) a Transfer Syntax (PS3.18 8.7).

    Raised inside the transcode worker; Celery carries it back by module and class
    name, so a retrieve that imports this module gets it as itself and answers 406.
    """


class Conflict(TesseraError):
    status_code = 409


class PayloadTooLarge(TesseraError):
    status_code = 413


class UnsupportedMediaType(TesseraError):
    status_code = 415


class BadGateway(TesseraError):
    """An upstream service answered something this one cannot use."""

    status_code = 502


class ServiceUnavailable(TesseraError):
    status_code = 503

    def __init__(self, reason: str = "", retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class InvalidInstance(Exception):
    """One STOW-RS part that cannot be stored; data for FailedSOPSequence.

    ``failure_reason`` is a PS3.18 Table I.2-2 / PS3.4 status code, e.g. 0xC000.
    The UIDs are filled in as far as they could be read (PS3.18 Table 10.5.3-3
    wants ReferencedSOPClassUID and ReferencedSOPInstanceUID where known).
    """

    def __init__(
        self,
        failure_reason: int,
        message: str,
        sop_class_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> None:
        super().__init__(message)
        self.failure_reason = failure_reason
        self.message = message
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
