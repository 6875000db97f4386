"""What to import: the DICOM files under the paths given, as :class:`Source` items.

- a folder: every file below it (sorted, hidden folders too); a file is DICOM when it
  has the PS3.10 preamble and ``DICM`` prefix (PS3.10 7.1), or, without one, starts
  with a group 0002 or 0008 element (old files written without a preamble);
- a ``.zip`` file (or one found in a folder): each member the same way;
- a ``DICOMDIR`` (PS3.10 Media Storage Directory, itself not stored): the files its
  records reference (ReferencedFileID, relative to its folder); met in a folder walk it
  is skipped, as the files it lists are walked anyway.

A :class:`Source` knows its size and how to open its bytes; its ``key`` (path, member,
size, modification time) is what the resume journal remembers.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom

PREAMBLE = 128


@dataclass(frozen=True)
class Source:
    path: str  # the file, or the zip file
    member: str | None  # the member of the zip file
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return f"{self.path}!{self.member}" if self.member else self.path

    @property
    def key(self) -> str:
        return f"{self.name}|{self.size}|{self.mtime_ns}"

    def read(self) -> bytes:
        if self.member is None:
            return Path(self.path).read_bytes()
        with zipfile.ZipFile(self.path) as z:
            return z.read(self.member)


@dataclass(frozen=True)
class Skipped:
    name: str
    why: str


def looks_like_dicom(head: bytes) -> bool:
    """PS3.10 7.1: a 128-byte preamble then ``DICM``; or a data set with no preamble,
    which starts with a group 0002 (meta) or 0008 element, little endian."""
    if len(head) >= PREAMBLE + 4 and head[PREAMBLE : PREAMBLE + 4] == b"DICM":
        return True
    return len(head) >= 8 and head[1] == 0 and head[0] in (2, 8)


def _is_dicomdir(path: Path) -> bool:
    return path.name.upper() == "DICOMDIR"


def walk(paths: list[str]) -> Iterator[Source | Skipped]:
    """Every DICOM file under ``paths`` (and what was skipped, and why), in order."""
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    child = Path(root) / name
                    if _is_dicomdir(child):
                        continue  # its files are in this walk
                    yield from _file(child)
        elif path.is_file() and _is_dicomdir(path):
            yield from dicomdir(path)
        elif path.is_file():
            yield from _file(path)
        else:
            yield Skipped(given, "no such file or folder")


def _file(path: Path) -> Iterator[Source | Skipped]:
    try:
        stat = path.stat()
        with path.open("rb") as f:
            head = f.read(PREAMBLE + 4)
    except OSError as e:
        yield Skipped(str(path), f"cannot be read: {e.strerror or e}")
        return
    if head[:4] == b"PK\x03\x04" and zipfile.is_zipfile(path):
        yield from _zip(path, stat.st_mtime_ns)
    elif looks_like_dicom(head):
        yield Source(str(path), None, stat.st_size, stat.st_mtime_ns)
    else:
        yield Skipped(str(path), "not a DICOM file")


def _zip(path: Path, mtime_ns: int) -> Iterator[Source | Skipped]:
    try:
        with zipfile.ZipFile(path) as z:
            for info in sorted(z.infolist(), key=lambda i: i.filename):
                if info.is_dir():
                    continue
                name = f"{path}!{info.filename}"
                if Path(info.filename).name.upper() == "DICOMDIR":
                    continue
                with z.open(info) as member:
                    head = member.read(PREAMBLE + 4)
                if looks_like_dicom(head):
                    yield Source(str(path), info.filename, info.file_size, mtime_ns)
                else:
                    yield Skipped(name, "not a DICOM file")
    except (OSError, zipfile.BadZipFile) as e:
        yield Skipped(str(path), f"a zip file that cannot be read: {e}")


def dicomdir(path: Path) -> Iterator[Source | Skipped]:
    """The files a DICOMDIR's records reference (PS3.3 F.3: ReferencedFileID, path
    components relative to the DICOMDIR's folder)."""
    try:
        ds = pydicom.dcmread(path, force=True)
        records = list(ds.get("DirectoryRecordSequence", []))
    except Exception as e:  # a damaged DICOMDIR: say so, import nothing from it
        yield Skipped(str(path), f"a DICOMDIR that cannot be read: {type(e).__name__}")
        return
    for record in records:
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        yield from _file(path.parent.joinpath(*parts))
