"""DICOM JSON values straight from an element's stored bytes (issue 12: ingest CPU).

:func:`tessera.shared.dicomjson.dataset_to_json` encodes every element of every stored
instance; asking pydicom for each value (``Dataset.__getitem__``: a DataElement, a
MultiValue, UID / IS / DSfloat / PersonName objects) was most of its time. For the VRs
that make up nearly all of a header, with an explicit VR and a plain value, this module
gives the same JSON values from the bytes directly; anything else (a character set
escape, a byte above 0x7F, a number that does not parse, a non-finite float, an odd
length) answers ``None`` and the element goes the pydicom way, which knows every corner.

The rules are pydicom 3.0's ``pydicom.values`` converters, as :mod:`.dicomjson` then
encodes their results (tests/unit/test_rawvalues.py checks both agree on every element of
the test corpus):

* AS, CS, DA, DT, TM (``convert_string``): trailing spaces and NULs of the whole value
  removed, then split at ``\\``; UI the same (``convert_UI``); AE each value stripped of
  spaces at both ends (``convert_AE_string``).
* SH, LO, UC (``convert_text``): split, then each value's trailing spaces / NULs removed.
  LT, ST, UT (``convert_single_string``): one value, trailing spaces / NULs removed.
  Text is only taken here when it is ASCII without ESC: then every DICOM character set
  (all ASCII in G0) decodes it the same.
* PN (``convert_PN``): trailing spaces / NULs of the whole value removed, split, each
  name's ``=`` groups with trailing empty groups dropped.
* IS: ``[+-]digits`` (at most 9) per value; DS: a finite ``float()`` per value (PS3.18
  F.2.3.1); each without the spaces ``int()`` / ``float()`` ignore, and only those.
* US, SS, UL, SL, SV, UV, FL, FD: the numbers, in the element's byte order.

An empty value (no bytes, or only padding) is ``[]`` (no "Value"); an empty value among
several is ``None`` (``null``, PS3.18 F.2.5).
"""

from __future__ import annotations

import math
import re
import struct
from typing import Any

_STRING_VRS = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})
_TEXT_VRS = frozenset({"SH", "LO", "UC"})
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "SV": "q", "UV": "Q", "FL": "f", "FD": "d"}
_SIZES = {vr: struct.calcsize(code) for vr, code in _NUMBERS.items()}
_INTEGER = re.compile(r"[+-]?[0-9]{1,9}")  # larger ones: pydicom decides (PS3.5 IS range)
_ESC = 0x1B
_ASCII_SPACE = " \t\n\v\f\r"  # what int() and float() ignore around a number

#: Specific Character Sets (PS3.3 C.12.1.1.2) whose text is decoded here, single-valued:
#: every byte a character (ISO_IR 100, Latin-1), or UTF-8 decoded strictly (ISO_IR 192)
ENCODINGS = {"ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8"}
_CODECS = frozenset(ENCODINGS.values())
_CHARSET_VRS = frozenset({*_TEXT_VRS, *_SINGLE_TEXT_VRS, "PN"})

#: the VRs :func:`json_values` may answer for
VRS = frozenset({*_STRING_VRS, *_TEXT_VRS, *_SINGLE_TEXT_VRS, *_NUMBERS, "AE", "PN", "IS", "DS"})


def json_values(
    vr: str, value: bytes, little_endian: bool, encoding: str | None = None
) -> list[Any] | None:
    """The DICOM JSON "Value" array of an element of ``vr`` stored as ``value``; ``[]``
    when it is empty; ``None`` when this module does not decide (use pydicom).

    ``encoding``: the Python codec of the data set's Specific Character Set when it is one
    of :data:`ENCODINGS` alone; text (SH, LO, UC, LT, ST, UT, PN) outside ASCII is then
    decoded with it, as pydicom does with a single character set and no escape."""
    code = _NUMBERS.get(vr)
    if code is not None:
        return _numbers(vr, code, value, little_endian)
    if _ESC in value:
        return None
    if value.isascii():
        text = value.decode("ascii")
    elif encoding in _CODECS and vr in _CHARSET_VRS:
        try:
            text = value.decode(encoding)
        except UnicodeDecodeError:
            return None  # pydicom warns and replaces: its way
    else:
        return None
    if vr in _STRING_VRS:
        return _nulls(text.rstrip(" \0").split("\\"))
    if vr in _TEXT_VRS:
        return _nulls([v.rstrip("\0 ") for v in text.split("\\")])
    if vr in _SINGLE_TEXT_VRS:
        single = text.rstrip("\0 ")
        return [single] if single else []
    if vr == "AE":
        return _nulls([v.strip() for v in text.split("\\")])
    if vr == "PN":
        return _person_names(text.rstrip("\0 ").split("\\"))
    if vr == "IS":
        return _integers(text.rstrip(" \0").split("\\"))
    if vr == "DS":
        return _decimals(text.strip().rstrip(" \0").split("\\"))
    return None


def _nulls(values: list[str]) -> list[Any]:
    if len(values) == 1:
        return values if values[0] else []
    return [v or None for v in values]


def _numbers(vr: str, code: str, value: bytes, little_endian: bool) -> list[Any] | None:
    size = _SIZES[vr]
    if len(value) % size:
        return None
    count = len(value) // size
    numbers = list(struct.unpack(f"{'<' if little_endian else '>'}{count}{code}", value))
    if vr in ("FL", "FD") and not all(math.isfinite(n) for n in numbers):
        return None  # the pydicom way discards it, and says so
    return numbers


def _person_names(values: list[str]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        groups = v.split("=")
        while groups and not groups[-1]:
            groups.pop()
        if not groups:  # "" or "=": a name with no component
            out.append(None)
            continue
        name = {"Alphabetic": groups[0]}
        if len(groups) > 1:
            name["Ideographic"] = groups[1]
        if len(groups) > 2:
            name["Phonetic"] = groups[2]
        out.append(name)
    return [] if out == [None] else out


def _integers(values: list[str]) -> list[Any] | None:
    out: list[Any] = []
    for value in values:
        v = _number_text(value)
        if v is None:
            return None
        if not v:
            out.append(None)
        elif _INTEGER.fullmatch(v):
            out.append(int(v))
        else:
            return None
    return [] if out == [None] else out


def _number_text(v: str) -> str | None:
    """``v`` without the spaces ``int()`` and ``float()`` ignore around a number; None
    when control characters that ``str.strip()`` also removes (0x1C-0x1F) are left at its
    ends: pydicom's conversion then fails or reads it as empty, its way decides."""
    v = v.strip(_ASCII_SPACE)
    return v if v == v.strip() else None


def _decimals(values: list[str]) -> list[Any] | None:
    out: list[Any] = []
    for value in values:
        v = _number_text(value)
        if v is None:
            return None
        if not v:
            out.append(None)
            continue
        try:
            number = float(v)
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        out.append(number)
    return [] if out == [None] else out
