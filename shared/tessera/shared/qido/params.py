"""Parse a QIDO-RS query string into a :class:`QidoQuery` (PS3.18 8.3.4, 10.6.1).

Input is the decoded ``(name, value)`` list of the query string, in order
(starlette's ``request.query_params.multi_items()``). Attributes are named by keyword
(``PatientName``) or by tag (``00100010``), mixed; names and VRs come from pydicom's
data dictionary. Every problem is a :class:`QueryError` (400) naming the key.

Match values are classified per PS3.4 C.2.2.2 into :data:`Matcher` forms:

    ""  or "*"                   Universal   C.2.2.2.3 (and C.2.2.2.4: "*" alone)
    "Smith^John"                 Single      C.2.2.2.1
    "1.2.3\\1.2.4" (UI; or ",")  AnyOf       C.2.2.2.2 UID list; PS3.18 8.3.4.1 uid-list-match
    "*smi?h*"                    Wildcard    C.2.2.2.4 (not for UI, DA, TM, DT)
    "20240101-", "-1200", "a-b"  Range       C.2.2.2.5 (DA, TM, DT only)
    "CT\\MR" (any other VR)      AnyOf       multiple value matching (PS3.18 8.3.4.6)

A key may name an attribute inside a sequence (PS3.18 8.3.4.1 ``attribute-path``, e.g.
``RequestAttributesSequence.RequestedProcedureID=RP1`` or ``00400275.00401001=RP1``):
Sequence Matching, PS3.4 C.2.2.2.6 — an entity matches if any item of the sequence
matches. Such a key is :attr:`MatchKey.path`; the sequence itself is returned.

Query parameters besides the match keys (PS3.18 Table 8.3.4-1): ``includefield``
(repeated and/or comma-separated, keyword or tag, or ``all``), ``limit`` and ``offset``
(uint), and the booleans ``fuzzymatching``, ``emptyvaluematching`` and
``multiplevaluematching`` (what each does is documented on :class:`QidoQuery`).
``accept`` and ``charset`` (PS3.18 8.3.3) belong to the HTTP layer and are skipped here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tessera.shared.errors import QueryError
from tessera.shared.levels import Layout
from tessera.shared.qido.attributes import (
    DEFAULT_LAYOUT,
    RETURN_ONLY,
    Attribute,
    Level,
    resolve_attribute,
)

# VRs that cannot be matched with a value: bulk data, and a sequence as a whole (its
# items' attributes can, C.2.2.2.6).
_UNMATCHABLE_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UN"})
_BOOLEANS = ("fuzzymatching", "emptyvaluematching", "multiplevaluematching")
_HTTP_PARAMS = frozenset({"accept", "charset"})
_DA = r"\d{8}"
_TM = r"\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?"
_DT = r"\d{4}(?:\d{2}){0,5}(?:\.\d{1,6})?(?:[+-]\d{4})?"
_DATE_FORMS = {"DA": _DA, "TM": _TM, "DT": _DT}


@dataclass(frozen=True, slots=True)
class Universal:
    """Matches every entity; the attribute is returned (C.2.2.2.3)."""


@dataclass(frozen=True, slots=True)
class Single:
    value: str


@dataclass(frozen=True, slots=True)
class Wildcard:
    pattern: str  # DICOM wildcards: '*' any run, '?' one character


@dataclass(frozen=True, slots=True)
class Range:
    low: str  # '' = open
    high: str  # '' = open


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Matches if any of the alternatives matches (UID list, multiple value matching)."""

    alternatives: tuple[Single | Wildcard | Range, ...]


Matcher = Universal | Single | Wildcard | Range | AnyOf


@dataclass(frozen=True, slots=True)
class MatchKey:
    """One matching key. ``attribute`` is the top-level element (for a sequence key the
    sequence, whose level decides where it is matched); ``path`` the attributes inside
    its items, outermost first (C.2.2.2.6); the last of them is what ``matcher`` tests."""

    attribute: Attribute
    value: str  # as sent (stripped of surrounding spaces)
    matcher: Matcher
    path: tuple[Attribute, ...] = ()

    @property
    def leaf(self) -> Attribute:
        return self.path[-1] if self.path else self.attribute


@dataclass(frozen=True, slots=True)
class Scope:
    """The UIDs fixed by the target resource's path (PS3.18 Table 10.6.1-1)."""

    study_instance_uid: str | None = None
    series_instance_uid: str | None = None


@dataclass(frozen=True)
class QidoQuery:
    """One search: what to match, what to return, which page.

    ``fuzzymatching`` (PS3.18 8.3.4.2): when true, a PN key whose value has no wildcard
    matches an entity if every word of the value (split at spaces, ``^``, ``=`` and
    ``,``) is the start of some word of the stored name, case-insensitively: ``john smi``
    matches ``Smith^John``. Without it PN keys use the standard matching of C.2.2.2,
    case-insensitive. Other VRs are unaffected.

    ``emptyvaluematching`` (PS3.18 8.3.4.5): when true, an entity whose attribute is
    empty or absent also matches a key with a non-universal value.

    ``multiplevaluematching`` (PS3.18 8.3.4.6): true unless the request says ``false``:
    a ``\\``-separated value of a non-UID key matches if any of its values matches
    (``ModalitiesInStudy=CT\\MR``). When false, ``\\`` is an ordinary character.
    """

    level: Level
    scope: Scope = Scope()
    matches: tuple[MatchKey, ...] = ()
    includefields: tuple[Attribute, ...] = ()
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    fuzzymatching: bool = False
    emptyvaluematching: bool = False
    multiplevaluematching: bool = True
    layout: Layout = DEFAULT_LAYOUT  # which attributes the index keeps at which level
    # the caller's labels (never from the request's parameters): only studies carrying
    # one of them match, and patient counts count only those; None: every study
    labels: frozenset[str] | None = None


def parse_query(
    items: Iterable[tuple[str, str]],
    level: Level,
    scope: Scope = Scope(),
    layout: Layout = DEFAULT_LAYOUT,
) -> QidoQuery:
    """Parse a decoded query string for a search at ``level`` within ``scope``; ``layout``
    says at which level the index keeps each attribute."""
    raw: dict[tuple[str, ...], tuple[str, tuple[Attribute, ...], list[str]]] = {}
    includes: dict[str, Attribute] = {}
    include_all = False
    numbers: dict[str, int] = {}
    flags: dict[str, bool] = {}
    for name, value in items:
        if "\x00" in name or "\x00" in value:
            # PostgreSQL text cannot hold NUL, and no DICOM value has one (PS3.5 6.1.2)
            raise QueryError("a query parameter holds a NUL character (%00)")
        if name == "includefield":
            for part in (p.strip() for p in value.split(",")):
                if part == "all":
                    include_all = True
                elif part:
                    attribute = resolve_attribute(part.split(".")[0], layout)
                    includes.setdefault(attribute.tag, attribute)
        elif name in ("limit", "offset"):
            if name in numbers:
                raise QueryError(f"{name} is given more than once")
            numbers[name] = _uint(name, value)
        elif name in _BOOLEANS:
            if name in flags:
                raise QueryError(f"{name} is given more than once")
            flags[name] = _boolean(name, value)
        elif name in _HTTP_PARAMS:
            continue
        else:
            path = _match_path(name, level, layout)
            key = tuple(a.tag for a in path)
            if key in raw:
                if path[-1].vr != "UI":
                    raise QueryError(f"{name} is given more than once")
                raw[key][2].append(value)  # repeated UID keys form one list
            else:
                raw[key] = (name, path, [value])
    multiple = flags.get("multiplevaluematching", True)
    matches = tuple(_match_key(name, path, values, multiple) for name, path, values in raw.values())
    return QidoQuery(
        level=level,
        scope=scope,
        matches=matches,
        includefields=tuple(includes.values()),
        include_all=include_all,
        limit=numbers.get("limit"),
        offset=numbers.get("offset", 0),
        fuzzymatching=flags.get("fuzzymatching", False),
        emptyvaluematching=flags.get("emptyvaluematching", False),
        multiplevaluematching=multiple,
        layout=layout,
    )


def _uint(name: str, value: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise QueryError(f"{name}={value!r}: expected an unsigned integer below 10**18")
    return int(value)


def _boolean(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise QueryError(f"{name}={value!r}: expected true or false")
    return lowered == "true"


def _match_path(name: str, level: Level, layout: Layout) -> tuple[Attribute, ...]:
    """The attribute of a key, or for a sequence key (``Seq.Item``, PS3.18 8.3.4.1) the
    sequence followed by the attributes inside its items."""
    path = tuple(resolve_attribute(part, layout) for part in name.split("."))
    for outer in path[:-1]:
        if outer.vr != "SQ":
            raise QueryError(f"{name}: {outer.keyword or outer.tag} is not a sequence")
    attribute = path[0]
    if attribute.level.value > level.value:
        raise QueryError(
            f"{name} is a {attribute.level.label}-level attribute: not a matching key "
            f"when searching for {level.label} entities (PS3.4 C.6.1.1)"
        )
    return path


def _match_key(
    name: str, path: tuple[Attribute, ...], values: list[str], multiple: bool
) -> MatchKey:
    leaf = path[-1]
    value = "\\".join(v.strip() for v in values if v.strip())
    matcher = parse_matcher(name, value, leaf.vr, multiple)
    if not isinstance(matcher, Universal):
        if leaf.tag in RETURN_ONLY or leaf.vr in _UNMATCHABLE_VRS:
            raise QueryError(f"{name} is not a matching key (it can only be returned)")
    return MatchKey(path[0], value, matcher, path[1:])


def parse_matcher(name: str, value: str, vr: str, multiple: bool = True) -> Matcher:
    """Classify one match value per PS3.4 C.2.2.2 (see the module docstring)."""
    value = value.strip()
    if value in ("", "*"):
        return Universal()
    if vr == "UI":
        uids = [u.strip() for u in re.split(r"[\\,]", value) if u.strip()]
        if any("*" in u or "?" in u for u in uids):
            raise QueryError(f"{name}: wildcards are not allowed in UIDs (PS3.4 C.2.2.2.4)")
        if len(uids) == 1:
            return Single(uids[0])
        return AnyOf(tuple(Single(u) for u in uids))
    parts = [p.strip() for p in value.split("\\")] if multiple else [value]
    alternatives: list[Single | Wildcard | Range] = []
    for part in filter(None, parts):
        one = _one(name, part, vr)
        if isinstance(one, Universal):  # one alternative matches everything
            return one
        alternatives.append(one)
    if not alternatives:  # nothing but separators
        return Universal()
    if len(alternatives) == 1:
        return alternatives[0]
    return AnyOf(tuple(alternatives))


def _one(name: str, value: str, vr: str) -> Single | Wildcard | Range | Universal:
    form = _DATE_FORMS.get(vr)
    if form is None:
        if value == "*":
            return Universal()
        return Wildcard(value) if "*" in value or "?" in value else Single(value)
    if vr == "TM":
        value = value.replace(":", "")  # ACR-NEMA style hh:mm:ss
    elif vr == "DT":
        value = value.replace(" ", "+")  # an unescaped '+' of a UTC offset decodes as ' '

    if re.fullmatch(form, value):
        return Single(value)
    bounds = re.fullmatch(f"({form})?-({form})?", value)
    if bounds is None:
        raise QueryError(f"{name}={value!r}: not a {vr} value or {vr} range (PS3.4 C.2.2.2.5)")
    low, high = bounds.group(1) or "", bounds.group(2) or ""
    return Range(low, high) if low or high else Universal()
