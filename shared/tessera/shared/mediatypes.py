"""Media types and Accept headers as DICOMweb uses them (RFC 9110 §8.3.1, §12.5.1; PS3.18 8.7).

``parse_media_type`` reads one Content-Type value; ``parse_accept`` reads an Accept header
into :class:`AcceptRange` items, best first. Parameter names are case-insensitive and are
lower-cased; values keep their case (a multipart ``boundary`` is case-sensitive) and come back
unquoted, with quoted-pair backslash escapes undone.

Real clients are looser than the grammar and both parsers accept that:

* unquoted values that are not RFC 9110 tokens, e.g. ``type=application/dicom`` (``/`` is
  not a token character, yet OHIF and dicomweb-client send it unquoted);
* whitespace around ``=`` and empty parameters (``;;``, a trailing ``;``);
* ``*`` alone in Accept (``*/*``), and ``q=.5``.

Matching an offer against the parameters of a range (``type``, ``transfer-syntax``, PS3.18
8.7.3) is DICOMweb-specific and left to the caller; :meth:`AcceptRange.matches` compares the
type and subtype only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tessera.shared.errors import BadRequest

__all__ = ["AcceptRange", "MediaType", "parse_accept", "parse_media_type"]

# RFC 9110 §5.6.2 tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# one parameter, starting at a ";" or the end of the type/subtype (RFC 9110 §5.6.6)
_PARAM = re.compile(
    r"""[ \t]*;[ \t]*(?P<name>[^\s=;"]+)[ \t]*=[ \t]*
        (?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s;"]*))
        [ \t]*(?=;|\Z)""",
    re.VERBOSE | re.DOTALL,
)
_EMPTY_PARAM = re.compile(r"[ \t]*;[ \t]*(?=;|\Z)")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# one Accept element: commas inside a quoted-string do not split (an unclosed quote runs on)
_ELEMENT = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*"?)+', re.DOTALL)
# RFC 9110 §12.4.2 qvalue, plus the ".5" some clients send
_QVALUE = re.compile(r"0(?:\.[0-9]*)?|1(?:\.0*)?|\.[0-9]+")


@dataclass(frozen=True)
class MediaType:
    """``type/subtype`` and parameters; type, subtype and parameter names lower-cased."""

    type: str
    subtype: str
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", self.type.lower())
        object.__setattr__(self, "subtype", self.subtype.lower())
        object.__setattr__(self, "params", {k.lower(): v for k, v in self.params.items()})

    @property
    def essence(self) -> str:
        """``type/subtype`` without parameters, lower-cased."""
        return f"{self.type}/{self.subtype}"

    def __str__(self) -> str:
        return self.essence + "".join(f"; {k}={_render(v)}" for k, v in self.params.items())

    def __hash__(self) -> int:
        return hash((self.type, self.subtype, frozenset(self.params.items())))


@dataclass(frozen=True)
class AcceptRange:
    """One media range of an Accept header with its weight ``q`` (0 means "not acceptable").

    Ranges with ``q == 0`` are kept (last in the list) so a negotiator can honour
    exclusions such as ``*/*, application/dicom;q=0``; skip them when picking a match.
    """

    media_type: MediaType
    q: float = 1.0

    @property
    def type(self) -> str:
        return self.media_type.type

    @property
    def subtype(self) -> str:
        return self.media_type.subtype

    @property
    def params(self) -> dict[str, str]:
        return self.media_type.params

    @property
    def essence(self) -> str:
        return self.media_type.essence

    @property
    def specificity(self) -> tuple[bool, bool, int]:
        """Orders ranges of equal ``q``: ``a/b;p=v`` > ``a/b`` > ``a/*`` > ``*/*``."""
        return (self.type != "*", self.subtype != "*", len(self.params))

    def matches(self, offer: MediaType | str) -> bool:
        """True if ``offer``'s type and subtype fall in this range; parameters are ignored."""
        if isinstance(offer, str):
            offer = parse_media_type(offer)
        return (self.type in ("*", offer.type)) and (self.subtype in ("*", offer.subtype))

    def __str__(self) -> str:
        if self.q == 1.0:
            return str(self.media_type)
        return f"{self.media_type}; q={self.q:.3f}".rstrip("0").rstrip(".")


def parse_media_type(value: str) -> MediaType:
    """Parse one media type, e.g. a Content-Type value; raise :class:`BadRequest` if malformed.

    Wildcards are not media types: use :func:`parse_accept` for media ranges.
    """
    mt = _parse(value)
    if mt.type == "*" or mt.subtype == "*":
        raise BadRequest(f"malformed media type {value!r}: wildcards are only for Accept")
    return mt


def parse_accept(header: str | None) -> list[AcceptRange]:
    """Parse an Accept header (several headers may be joined with commas) into ranges.

    The result is sorted by ``q`` descending, then by specificity, otherwise in header order.
    A missing or empty header means ``*/*``. A range that cannot be parsed, or whose ``q`` is
    not a valid qvalue, is ignored; if every range is ignored the list is empty, which a
    caller should answer with 406 Not Acceptable.
    """
    elements = [e.strip(" \t") for e in _ELEMENT.findall(header or "")]
    elements = [e for e in elements if e]
    if not elements:
        return [AcceptRange(MediaType("*", "*"))]
    ranges = []
    for element in elements:
        try:
            mt = _parse("*/*" + element[1:] if element.split(";")[0].strip() == "*" else element)
        except BadRequest:
            continue
        if mt.type == "*" and mt.subtype != "*":
            continue
        params = dict(mt.params)
        weight = params.pop("q", "1")
        if not _QVALUE.fullmatch(weight) or float(weight) > 1:
            continue
        ranges.append(AcceptRange(MediaType(mt.type, mt.subtype, params), float(weight)))
    return sorted(ranges, key=lambda r: (r.q, r.specificity), reverse=True)


def _parse(value: str) -> MediaType:
    head = value.split(";", 1)[0]
    type_, slash, subtype = head.strip(" \t").partition("/")
    if not (slash and _TOKEN.fullmatch(type_) and _TOKEN.fullmatch(subtype)):
        raise BadRequest(f"malformed media type {value!r}: expected type/subtype")
    params: dict[str, str] = {}
    rest = value[len(head) :].rstrip(" \t")
    pos = 0
    while pos < len(rest):
        if m := _EMPTY_PARAM.match(rest, pos):
            pos = m.end()
            continue
        m = _PARAM.match(rest, pos)
        if m is None or not _TOKEN.fullmatch(m["name"]):
            raise BadRequest(f"malformed parameter in media type {value!r}")
        name = m["name"].lower()
        if m["quoted"] is not None:
            params.setdefault(name, _QUOTED_PAIR.sub(r"\1", m["quoted"]))
        else:
            params.setdefault(name, m["bare"])
        pos = m.end()
    return MediaType(type_, subtype, params)


def _render(value: str) -> str:
    if _TOKEN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
