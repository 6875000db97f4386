"""The Native DICOM Model (PS3.19 A.1) to and from the DICOM JSON Model (PS3.18 F.2).

PS3.18 F.3 maps one to the other attribute for attribute; the services produce DICOM JSON,
and ``application/dicom+xml`` answers are this module's rendering of it:

==================================  =============================================
DICOM JSON (F.2)                    Native DICOM Model (PS3.19 A.1.1)
==================================  =============================================
``"00100010": {"vr": "PN", ...}``   ``<DicomAttribute tag="00100010" vr="PN"
                                    keyword="PatientName">`` (keyword from PS3.6;
                                    a private element names its ``privateCreator``)
``"Value": [v1, v2]``               ``<Value number="1">v1</Value>...``
``null`` in ``Value``               ``<Value number="n"/>``
PN ``{"Alphabetic": "F^G^M^P^S"}``  ``<PersonName number="n"><Alphabetic>
                                    <FamilyName>F</FamilyName>...``
SQ items                            ``<Item number="n">`` + the item's attributes
``"BulkDataURI": u``                ``<BulkData uri="u"/>``
``"InlineBinary": b``               ``<InlineBinary>b</InlineBinary>``
==================================  =============================================

Text that XML 1.0 cannot carry (C0 controls but tab, line feed and carriage return) is
replaced by U+FFFD. Reading uses defusedxml: a document with a DTD, entity declarations
or external references is refused, so a STOW-RS body cannot expand entities or make the
server fetch anything.
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from pydicom.datadict import keyword_for_tag

from tessera.shared.errors import BadRequest

__all__ = ["DICOM_XML", "NAMESPACE", "dataset_to_xml", "xml_to_dataset"]

DICOM_XML = "application/dicom+xml"
NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_NS = "{" + NAMESPACE + "}"
_HEAD = f'<?xml version="1.0" encoding="UTF-8"?>\n<NativeDicomModel xmlns="{NAMESPACE}">'
_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_TAG = re.compile(r"[0-9A-F]{8}")
_INTEGER_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})


def dataset_to_xml(dataset: dict[str, Any]) -> bytes:
    """One ``NativeDicomModel`` document (UTF-8) of a DICOM JSON data set."""
    out = [_HEAD]
    _attributes(dataset, out)
    out.append("</NativeDicomModel>\n")
    return "".join(out).encode()


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        value = int(value)  # DS 2.0 as "2": the value as a DICOM string would hold it
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def _attributes(dataset: dict[str, Any], out: list[str]) -> None:
    for tag in sorted(dataset):
        element = dataset[tag] or {}
        vr = str(element.get("vr", "UN"))
        head = f'<DicomAttribute tag="{tag.upper()}" vr="{vr}"'
        group, number = int(tag[:4], 16), int(tag[4:], 16)
        if group % 2:  # private (PS3.5 7.8.1): the creator of its block, when present
            block = number >> 8  # (gggg,xxyy) belongs to the creator at (gggg,00xx)
            creator = dataset.get(f"{group:04X}00{block:02X}", {}).get("Value")
            if block >= 0x10 and creator:
                head += f" privateCreator={quoteattr(_NOT_XML.sub('', str(creator[0])))}"
        else:
            keyword = keyword_for_tag(int(tag, 16))
            if keyword:
                head += f' keyword="{keyword}"'
        out.append(head + ">")
        if "BulkDataURI" in element:
            out.append(f"<BulkData uri={quoteattr(str(element['BulkDataURI']))}/>")
        elif "InlineBinary" in element:
            out.append(f"<InlineBinary>{element['InlineBinary']}</InlineBinary>")
        else:
            for n, value in enumerate(element.get("Value") or (), 1):
                if vr == "SQ":
                    out.append(f'<Item number="{n}">')
                    _attributes(value or {}, out)
                    out.append("</Item>")
                elif vr == "PN":
                    out.append(_person_name(n, value))
                elif value is None:
                    out.append(f'<Value number="{n}"/>')
                else:
                    out.append(f'<Value number="{n}">{_text(value)}</Value>')
        out.append("</DicomAttribute>")


def _person_name(n: int, value: dict[str, str] | None) -> str:
    parts = [f'<PersonName number="{n}">']
    for group in _GROUPS:
        text = (value or {}).get(group)
        if not text:
            continue
        parts.append(f"<{group}>")
        for name, component in zip(_COMPONENTS, text.split("^"), strict=False):
            if component:
                parts.append(f"<{name}>{_text(component)}</{name}>")
        parts.append(f"</{group}>")
    parts.append("</PersonName>")
    return "".join(parts)


def xml_to_dataset(data: bytes) -> dict[str, Any]:
    """The DICOM JSON data set of a ``NativeDicomModel`` document; BadRequest if it is
    not one (malformed XML, a DTD or entities, a wrong root, a bad tag or number)."""
    try:
        root = SafeET.fromstring(data, forbid_dtd=True)
    except (SafeET.ParseError, DefusedXmlException, ValueError) as e:
        raise BadRequest(f"not a PS3.19 Native DICOM Model document: {e}") from None
    if _local(root) != "NativeDicomModel":
        raise BadRequest(f"the root element is {_local(root)!r}, not NativeDicomModel (PS3.19 A.1)")
    return _dataset(root, depth=0)


def _local(element: Element) -> str:
    return element.tag.removeprefix(_NS)


def _dataset(parent: Element, depth: int) -> dict[str, Any]:
    if depth > 32:
        raise BadRequest("items nested more than 32 deep")
    dataset: dict[str, Any] = {}
    for attribute in parent:
        if _local(attribute) != "DicomAttribute":
            raise BadRequest(f"unexpected element {_local(attribute)!r} in a data set")
        tag = attribute.get("tag", "").upper()
        vr = attribute.get("vr", "")
        if not _TAG.fullmatch(tag) or not re.fullmatch(r"[A-Z]{2}", vr):
            raise BadRequest(f"DicomAttribute with tag {tag!r} and vr {vr!r} (PS3.19 A.1.6)")
        dataset[tag] = _element(attribute, vr, depth)
    return dataset


def _element(attribute: Element, vr: str, depth: int) -> dict[str, Any]:
    element: dict[str, Any] = {"vr": vr}
    values: dict[int, Any] = {}
    for child in attribute:
        kind = _local(child)
        if kind == "BulkData":
            element["BulkDataURI"] = child.get("uri") or child.get("uuid") or ""
        elif kind == "InlineBinary":
            element["InlineBinary"] = "".join((child.text or "").split())
        elif kind in ("Value", "PersonName", "Item"):
            values[_number(child)] = _value(child, kind, vr, depth)
        else:
            raise BadRequest(f"unexpected element {kind!r} in DicomAttribute")
    if values:
        element["Value"] = [values.get(n) for n in range(1, max(values) + 1)]
    return element


def _number(child: Element) -> int:
    number = child.get("number", "")
    if not number.isdigit() or not 0 < int(number) <= 1_000_000:
        raise BadRequest(f"{_local(child)} number {number!r} is not a positive integer")
    return int(number)


def _value(child: Element, kind: str, vr: str, depth: int) -> Any:
    if kind == "Item":
        return _dataset(child, depth + 1)
    if kind == "PersonName":
        if len(child) == 0:
            return None
        name: dict[str, str] = {}
        for group in child:
            components = {_local(c): c.text or "" for c in group}
            name[_local(group)] = "^".join(components.get(c, "") for c in _COMPONENTS).rstrip("^")
        return name
    text = child.text
    if text is None:
        return None
    try:
        if vr in _INTEGER_VRS:
            return int(text)
        if vr in _FLOAT_VRS:
            return float(text)
    except ValueError:
        return text.strip()  # kept as stored, as the JSON model allows for IS/DS
    return text
