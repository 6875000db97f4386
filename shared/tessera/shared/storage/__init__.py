"""Object storage: one interface, two backends (local folder, S3 API).

Keys are immutable: an instance is stored under the SHA-256 of its bytes
(:func:`instance_key`), so a key always names the same bytes and a re-sent
identical instance lands on the same key. Both backends raise
:class:`tessera.shared.errors.ObjectNotFound` for a missing key.
"""

from __future__ import annotations

from urllib.parse import urlparse

from tessera.shared.settings import Settings
from tessera.shared.storage.base import (
    ObjectStore,
    derived_frame_key,
    derived_key,
    derived_prefixes,
    instance_key,
    instance_keys,
    rendered_key,
)
from tessera.shared.storage.local import LocalStore

__all__ = [
    "LocalStore",
    "ObjectStore",
    "derived_frame_key",
    "derived_key",
    "derived_prefixes",
    "instance_key",
    "instance_keys",
    "open_store",
    "rendered_key",
]


def open_store(settings: Settings) -> ObjectStore:
    url = urlparse(settings.storage_url)
    if url.scheme == "file":
        return LocalStore(url.path)
    if url.scheme == "s3":
        from tessera.shared.storage.s3 import S3Store

        return S3Store(
            bucket=url.netloc,
            prefix=url.path.strip("/"),
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=settings.s3_secret_access_key or None,
        )
    raise ValueError(
        f"storage_url must be file:///folder or s3://bucket, not {settings.storage_url!r}"
    )
