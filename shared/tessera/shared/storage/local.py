"""Objects as files in a local folder (single-machine mode)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from tessera.shared.errors import ObjectNotFound
from tessera.shared.storage.base import CHUNK, StoreBase, StoredObject, Temporary

_TEMPORARY = ".put-"  # what a file being written is named until it is renamed into place


def _close_opened(opening: asyncio.Future[Any]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result()[0].close()


class LocalStore(StoreBase):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad object key {key!r}")
        return self.root / key

    def _write(self, key: str, fp: IO[bytes], size: int) -> None:
        path = self._path(key)
        try:  # the folder is there but for the first object under it: no mkdir each time
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TEMPORARY)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TEMPORARY)
        try:
            with os.fdopen(fd, "wb") as out:
                remaining = size
                while remaining > 0:
                    block = fp.read(min(CHUNK, remaining))
                    if not block:
                        raise ValueError(f"short read storing {key}: {remaining} bytes missing")
                    out.write(block)
                    remaining -= len(block)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def put_file(self, key: str, fp: IO[bytes], size: int) -> None:
        await asyncio.to_thread(self._write, key, fp, size)

    def _write_unless_present(self, key: str, fp: IO[bytes], size: int) -> bool:
        try:
            os.utime(self._path(key))
            return False
        except FileNotFoundError:
            self._write(key, fp, size)
            return True

    async def put_file_unless_present(self, key: str, fp: IO[bytes], size: int) -> bool:
        # one thread hop for both
        return await asyncio.to_thread(self._write_unless_present, key, fp, size)

    async def put_bytes(self, key: str, data: bytes) -> None:
        await self.put_file(key, io.BytesIO(data), len(data))

    def _read(self, key: str, start: int, length: int | None) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                f.seek(start)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key}") from None

    async def get_bytes(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        return await asyncio.to_thread(self._read, key, start, length)

    def _open_first(self, key: str, start: int, n: int) -> tuple[IO[bytes], bytes]:
        """The open file at ``start`` and its first ``n`` bytes: one thread hop for both
        (an object no longer than a chunk, a frame, an instance, is then read whole)."""
        f = open(self._path(key), "rb")  # closed by stream()
        try:
            if start:
                f.seek(start)
            return f, f.read(n)
        except BaseException:
            f.close()
            raise

    async def stream(
        self, key: str, start: int = 0, length: int | None = None, chunk_size: int = CHUNK
    ) -> AsyncIterator[bytes]:
        n = chunk_size if length is None else min(chunk_size, length)
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_first, key, start, n))
        try:
            f, block = await asyncio.shield(opening)
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key}") from None
        except asyncio.CancelledError:
            # the thread goes on and opens the file: close it then, not at garbage collection
            opening.add_done_callback(_close_opened)
            raise
        try:
            remaining = length
            while block:
                if remaining is not None:
                    remaining -= len(block)
                yield block
                if len(block) < n or (remaining is not None and remaining <= 0):
                    break  # a short read of a file is its end
                n = chunk_size if remaining is None else min(chunk_size, remaining)
                block = await asyncio.to_thread(f.read, n)
        finally:
            f.close()

    async def size(self, key: str) -> int:
        try:
            return (await asyncio.to_thread(os.stat, self._path(key))).st_size
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key}") from None

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).exists)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self._path(key))

    async def delete_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise ValueError(f"a prefix names a folder, ending in '/': {prefix!r}")
        await asyncio.to_thread(shutil.rmtree, self._path(prefix.rstrip("/")), True)

    def _walk(self, prefix: str, start_after: str) -> list[StoredObject]:
        """Every object under ``prefix`` after ``start_after``, in key order; folders
        wholly before ``start_after`` are not entered."""
        found: list[StoredObject] = []

        def visit(folder: Path, key: str) -> None:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError):
                return
            for entry in entries:
                name = key + entry.name
                if entry.is_dir(follow_symlinks=False):
                    inside = name + "/"
                    if inside < start_after and not start_after.startswith(inside):
                        continue
                    visit(Path(entry.path), inside)
                elif not entry.name.startswith(_TEMPORARY) and name > start_after:
                    if name.startswith(prefix):
                        info = entry.stat(follow_symlinks=False)
                        found.append(StoredObject(name, info.st_size, info.st_mtime))

        top, _, _ = prefix.rpartition("/")
        visit(self._path(top) if top else self.root, top + "/" if top else "")
        return found

    async def list_objects(self, prefix: str, start_after: str = "") -> AsyncIterator[StoredObject]:
        for obj in await asyncio.to_thread(self._walk, prefix, start_after):
            yield obj

    async def modified(self, key: str) -> float | None:
        try:
            return (await asyncio.to_thread(os.stat, self._path(key))).st_mtime
        except FileNotFoundError:
            return None

    async def touch(self, key: str) -> bool:
        try:
            await asyncio.to_thread(os.utime, self._path(key))
        except FileNotFoundError:
            return False
        return True

    def _temporaries(self) -> list[Temporary]:
        found = []
        for folder, _, files in os.walk(self.root):
            for name in files:
                if name.startswith(_TEMPORARY):
                    path = Path(folder) / name
                    with contextlib.suppress(FileNotFoundError):
                        key = path.relative_to(self.root).as_posix()
                        found.append(Temporary(key, key, path.stat().st_mtime))
        return found

    async def temporaries(self) -> AsyncIterator[Temporary]:
        for temporary in await asyncio.to_thread(self._temporaries):
            yield temporary

    async def remove_temporary(self, temporary: Temporary) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self._path(temporary.handle))

    async def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise OSError(f"storage folder {self.root} is not writable")

    async def close(self) -> None:
        return None

    def disk_usage(self) -> shutil._ntuple_diskusage:
        return shutil.disk_usage(self.root)
