"""The object store interface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Protocol

CHUNK = 1024 * 1024


def instance_key(sha256_hex: str) -> str:
    """Hash-prefixed, content-addressed key of a stored DICOM instance:
    ``instances/<first two hex digits>/<sha256>.dcm``.

    One level of 256 prefixes, not two (``instances/ab/cd/``, before 2026-12, which
    :func:`instance_keys` still knows): on a local folder a young archive then creates a
    folder for its first few hundred instances only, not for most of its first 65,536,
    and creating a folder costs as much as creating the file (an inode each; on a
    churned ext4 that is up to a millisecond of CPU, bench/README "Inodes"). 256 folders
    keep 40,000 files each at ten million instances, which ext4's hashed directories and
    S3's prefixes take in their stride. A row keeps the key it was stored under, so
    objects stored under the earlier layout are read, deleted and swept as before.
    """
    return f"instances/{sha256_hex[:2]}/{sha256_hex}.dcm"


def instance_keys(sha256_hex: str) -> tuple[str, str]:
    """Every key the object of these bytes may have: :func:`instance_key`, then the
    earlier two-level one (``instances/ab/cd/<sha256>.dcm``), which older rows hold."""
    h = sha256_hex
    return instance_key(h), f"instances/{h[:2]}/{h[2:4]}/{h}.dcm"


def _stem(storage_key: str) -> str:
    """The ``<sha256>`` an instance key ends with: what its derived keys are named by."""
    return storage_key.rsplit("/", 1)[-1].removesuffix(".dcm")


def derived_prefixes(storage_key: str) -> tuple[str, ...]:
    """The key prefixes under which every object derived from ``storage_key`` lives
    (:func:`derived_key`, :func:`derived_frame_key`, :func:`rendered_key`)."""
    stem = _stem(storage_key)
    return (f"derived/{stem}/", f"rendered/{stem}/")


def derived_key(storage_key: str, transfer_syntax_uid: str) -> str:
    """Key of an instance converted to another Transfer Syntax (the transcode cache).

    ``derived/<sha256>/<TransferSyntaxUID>.dcm`` for an :func:`instance_key`; the stored
    object's keys are immutable, so a derived key always names the same conversion of
    the same bytes. Retrieve checks it before asking transcode, transcode writes it.
    """
    return f"derived/{_stem(storage_key)}/{transfer_syntax_uid}.dcm"


def derived_frame_key(storage_key: str, frame_number: int, transfer_syntax_uid: str) -> str:
    """Key of one frame's pixel data in another Transfer Syntax (PS3.18 10.4.1.1.x frames).

    ``derived/<sha256>/<TransferSyntaxUID>.frame-<frame>``, next to :func:`derived_key`
    and immutable like it: the bytes of frame ``frame_number`` (1-based) of the stored
    object, as transcode decoded them. Retrieve checks it before asking transcode. One
    folder per instance, as for :func:`rendered_key` (each folder is an inode to create:
    :func:`instance_key`); frames stored before 2026-12 under
    ``frames/<TransferSyntaxUID>/<frame>`` are no longer looked at (made again when asked
    for) and go with their instance's ``derived/<sha256>/``.
    """
    return f"derived/{_stem(storage_key)}/{transfer_syntax_uid}.frame-{frame_number}"


def rendered_key(storage_key: str, frame_number: int, digest: str, extension: str) -> str:
    """Key of one rendered frame (the rendering cache, PS3.18 8.3.5).

    ``rendered/<sha256>/<frame>-<digest>.<extension>``, ``digest`` naming the rendering
    parameters (:meth:`tessera.shared.rendering.RenderParams.digest`); immutable like
    :func:`derived_key`. Retrieve checks it before asking transcode, transcode writes it.
    One folder per instance, not one more per frame: a first rendering creates one
    folder and one file (each an inode: :func:`instance_key`). Renderings stored before
    2026-12 under ``<frame>/<digest>`` are no longer looked at (made again when asked
    for) and go with their instance's ``rendered/<sha256>/``.
    """
    return f"rendered/{_stem(storage_key)}/{frame_number}-{digest}.{extension}"


@dataclass(frozen=True)
class StoredObject:
    """An object as a listing shows it; ``modified`` in seconds since the epoch."""

    key: str
    size: int
    modified: float


@dataclass(frozen=True)
class Temporary:
    """What an interrupted write left: a ``.put-*`` file (local) or an unfinished
    multipart upload (S3). ``handle`` is the backend's own name for it."""

    handle: str
    key: str
    started: float


class ObjectStore(Protocol):
    async def put_file(self, key: str, fp: IO[bytes], size: int) -> None:
        """Store ``size`` bytes read from ``fp`` (at its current position) under ``key``.

        Atomic: a reader sees the whole object or nothing.
        """

    async def put_bytes(self, key: str, data: bytes) -> None: ...

    async def put_file_unless_present(self, key: str, fp: IO[bytes], size: int) -> bool:
        """:meth:`touch` the object, or :meth:`put_file` it if there is none; True if it
        was written. For content-addressed keys, where present means the same bytes."""

    async def get_bytes(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """The object's bytes, or the range [start, start+length)."""

    def stream(
        self, key: str, start: int = 0, length: int | None = None, chunk_size: int = CHUNK
    ) -> AsyncIterator[bytes]:
        """Stream the object (or a range) in chunks; ObjectNotFound before the first chunk."""

    async def size(self, key: str) -> int: ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove the object; no error if it is already gone."""

    async def delete_prefix(self, prefix: str) -> None:
        """Remove every object whose key starts with ``prefix`` (a folder-like ``a/b/``)."""

    async def delete_instance(self, storage_key: str) -> None:
        """Remove a stored instance and every object derived from it (transcoded
        instances and frames, renderings: :func:`derived_prefixes`)."""

    def list_objects(self, prefix: str, start_after: str = "") -> AsyncIterator[StoredObject]:
        """The objects whose keys start with ``prefix``, in key order, after
        ``start_after`` if given (where an interrupted listing resumes)."""

    async def modified(self, key: str) -> float | None:
        """When the object was last written or touched; None if there is none."""

    async def touch(self, key: str) -> bool:
        """Make the object's modification time now (its bytes unchanged); False if there
        is no such object."""

    def temporaries(self) -> AsyncIterator[Temporary]:
        """Whatever writes that never finished left behind."""

    async def remove_temporary(self, temporary: Temporary) -> None: ...

    async def check(self) -> None:
        """Raise if the store cannot be reached (readiness probe)."""

    async def close(self) -> None: ...


class StoreBase:
    """What every backend implements the same way, on top of its own primitives."""

    async def delete(self, key: str) -> None:
        raise NotImplementedError

    async def delete_prefix(self, prefix: str) -> None:
        raise NotImplementedError

    async def put_file_unless_present(self, key: str, fp: IO[bytes], size: int) -> bool:
        if await self.touch(key):
            return False
        await self.put_file(key, fp, size)
        return True

    async def put_file(self, key: str, fp: IO[bytes], size: int) -> None:
        raise NotImplementedError

    async def touch(self, key: str) -> bool:
        raise NotImplementedError

    async def delete_instance(self, storage_key: str) -> None:
        await self.delete(storage_key)
        for prefix in derived_prefixes(storage_key):
            await self.delete_prefix(prefix)
