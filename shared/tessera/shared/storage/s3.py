"""Objects in an S3-API bucket (AWS S3, MinIO, Ceph RGW, ...) through aiobotocore."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import IO, Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from tessera.shared.errors import ObjectNotFound
from tessera.shared.storage.base import CHUNK, StoreBase, StoredObject, Temporary

# Objects above this go up as a multipart upload, in parts of this size (S3 minimum 5 MiB)
_PART = 16 * 1024 * 1024
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}


class S3Store(StoreBase):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix + "/" if prefix else ""
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "config": Config(
                max_pool_connections=64,
                retries={"max_attempts": 3},
                # MinIO, moto, Ceph behind an endpoint URL want path-style addressing
                s3={"addressing_style": "path" if endpoint_url else "auto"},
            ),
        }
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    async def _s3(self) -> Any:
        if self._client is None:
            self._stack = AsyncExitStack()
            session = get_session()
            self._client = await self._stack.enter_async_context(
                session.create_client("s3", **self._client_args)
            )
        return self._client

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def put_file(self, key: str, fp: IO[bytes], size: int) -> None:
        s3 = await self._s3()
        if size <= _PART:
            await s3.put_object(Bucket=self.bucket, Key=self._k(key), Body=fp.read(size))
            return
        upload = await s3.create_multipart_upload(Bucket=self.bucket, Key=self._k(key))
        upload_id = upload["UploadId"]
        try:
            parts = []
            number, remaining = 1, size
            while remaining > 0:
                body = fp.read(min(_PART, remaining))
                if not body:
                    raise ValueError(f"short read storing {key}: {remaining} bytes missing")
                r = await s3.upload_part(
                    Bucket=self.bucket,
                    Key=self._k(key),
                    PartNumber=number,
                    UploadId=upload_id,
                    Body=body,
                )
                parts.append({"PartNumber": number, "ETag": r["ETag"]})
                number, remaining = number + 1, remaining - len(body)
            await s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._k(key),
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await s3.abort_multipart_upload(
                Bucket=self.bucket, Key=self._k(key), UploadId=upload_id
            )
            raise

    async def put_bytes(self, key: str, data: bytes) -> None:
        s3 = await self._s3()
        await s3.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)

    async def _get(self, key: str, start: int, length: int | None) -> Any:
        s3 = await self._s3()
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._k(key)}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            args["Range"] = f"bytes={start}-{end}"
        try:
            return await s3.get_object(**args)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
                raise ObjectNotFound(f"no object {key}") from None
            raise

    async def get_bytes(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        if length == 0:
            return b""
        r = await self._get(key, start, length)
        async with r["Body"] as body:
            return bytes(await body.read())

    async def stream(
        self, key: str, start: int = 0, length: int | None = None, chunk_size: int = CHUNK
    ) -> AsyncIterator[bytes]:
        if length == 0:
            return
        r = await self._get(key, start, length)
        async with r["Body"] as body:
            async for block in body.iter_chunks(chunk_size):
                yield block

    async def size(self, key: str) -> int:
        s3 = await self._s3()
        try:
            r = await s3.head_object(Bucket=self.bucket, Key=self._k(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
                raise ObjectNotFound(f"no object {key}") from None
            raise
        return int(r["ContentLength"])

    async def exists(self, key: str) -> bool:
        try:
            await self.size(key)
        except ObjectNotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.bucket, Key=self._k(key))

    async def delete_prefix(self, prefix: str) -> None:
        """Listed by prefix, deleted in batches of 1000 (the DeleteObjects limit)."""
        s3 = await self._s3()
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self._k(prefix)):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            for start in range(0, len(keys), 1000):
                await s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": keys[start : start + 1000], "Quiet": True},
                )

    async def list_objects(self, prefix: str, start_after: str = "") -> AsyncIterator[StoredObject]:
        s3 = await self._s3()
        paginator = s3.get_paginator("list_objects_v2")
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._k(prefix)}
        if start_after:
            args["StartAfter"] = self._k(start_after)
        async for page in paginator.paginate(**args):
            for o in page.get("Contents", []):
                key = o["Key"][len(self.prefix) :]
                yield StoredObject(key, int(o["Size"]), o["LastModified"].timestamp())

    async def modified(self, key: str) -> float | None:
        s3 = await self._s3()
        try:
            r = await s3.head_object(Bucket=self.bucket, Key=self._k(key))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise
        return float(r["LastModified"].timestamp())

    async def touch(self, key: str) -> bool:
        """A copy onto itself with its metadata replaced: S3's way to renew
        LastModified, done inside the store without moving the bytes."""
        s3 = await self._s3()
        try:
            await s3.copy_object(
                Bucket=self.bucket,
                Key=self._k(key),
                CopySource={"Bucket": self.bucket, "Key": self._k(key)},
                MetadataDirective="REPLACE",
                Metadata={"touched": "1"},
            )
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in _NOT_FOUND | {"NoSuchKey"}:
                return False
            raise
        return True

    async def temporaries(self) -> AsyncIterator[Temporary]:
        s3 = await self._s3()
        paginator = s3.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for u in page.get("Uploads", []):
                key = u["Key"][len(self.prefix) :]
                handle = f"{u['UploadId']}/{key}"
                yield Temporary(handle, key, u["Initiated"].timestamp())

    async def remove_temporary(self, temporary: Temporary) -> None:
        s3 = await self._s3()
        upload_id = temporary.handle.split("/", 1)[0]
        try:
            await s3.abort_multipart_upload(
                Bucket=self.bucket, Key=self._k(temporary.key), UploadId=upload_id
            )
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in {"NoSuchUpload", *_NOT_FOUND}:
                raise

    async def check(self) -> None:
        s3 = await self._s3()
        await s3.head_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack, self._client = None, None
