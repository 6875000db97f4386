"""SQL conditions for matching keys, per PS3.4 C.2.2.2, on the stored DICOM string forms.

* Single Value (C.2.2.2.1): equality, case-sensitive, except PN, which is matched
  case-insensitively against each component group (Alphabetic, Ideographic, Phonetic).
  C.2.2.2.1 leaves PN case sensitivity to the SCP, which may declare "case-insensitive
  matching" of PN in its conformance statement; this is ours. A DT single value is the
  range of itself (``2024`` matches any time in 2024).
* List of UIDs (C.2.2.2.2) and multiple values: ``= ANY`` / ``&&`` on text arrays.
* Universal (C.2.2.2.3): no condition.
* Wildcard (C.2.2.2.4): ``LIKE`` (``ILIKE`` for PN) with ``%``, ``_`` and ``\\``
  escaped, then ``*`` -> ``%`` and ``?`` -> ``_``.
* Range (C.2.2.2.5), DA/TM/DT: string comparison on the fixed-width forms, UTC offsets
  and combined date and time as in :mod:`.dates`. Empty values never match a range.
* Sequence (C.2.2.2.6): any item of the sequence matches (nested sequences likewise).
* ModalitiesInStudy / SOPClassesInStudy: any series (instance) of the study has the
  value, on the ``study.modalities_in_study`` / ``sop_classes_in_study`` arrays.
* Fuzzy PN matching (PS3.18 8.3.4.2, ``fuzzymatching=true``): see :func:`person_name`.

Attributes without a column match on the level's DICOM JSON (``attrs``) through the
SQL functions of migration 0003 (``tessera_attr_values``, ``tessera_attr_text``), with
the tag written into the SQL as a literal (it is 8 validated hex digits) so that the
expression indexes of ``python -m tessera.index.search_indexes`` apply. Values are always
``$n`` arguments.
"""

from __future__ import annotations

import re

from tessera.shared.errors import QueryError
from tessera.shared.qido.attributes import Attribute, Level
from tessera.shared.qido.dates import strip_offset, upper_bound, utc_bounds
from tessera.shared.qido.names import like_escape, like_pattern, person_name
from tessera.shared.qido.params import (
    AnyOf,
    Matcher,
    MatchKey,
    QidoQuery,
    Range,
    Single,
    Universal,
    Wildcard,
)

# tag -> column; aliases: p patient, st study, se series, i instance
COLUMNS: dict[str, str] = {
    "0020000D": "st.study_instance_uid",
    "00080020": "st.study_date",
    "00080030": "st.study_time",
    "00080050": "st.accession_number",
    "00200010": "st.study_id",
    "00081030": "st.study_description",
    "00080090": "st.referring_physician_name",
    "00100010": "p.patient_name",
    "00100020": "p.patient_id",
    "00100021": "p.issuer_of_patient_id",
    "00100030": "p.patient_birth_date",
    "00100040": "p.patient_sex",
    "0020000E": "se.series_instance_uid",
    "00080060": "se.modality",
    "00200011": "se.series_number",
    "0008103E": "se.series_description",
    "00400244": "se.performed_procedure_step_start_date",
    "00400245": "se.performed_procedure_step_start_time",
    "00080018": "i.sop_instance_uid",
    "00080016": "i.sop_class_uid",
    "00200013": "i.instance_number",
}
ARRAYS: dict[str, str] = {
    "00080061": "st.modalities_in_study",
    "00080062": "st.sop_classes_in_study",
}
ATTRS = {Level.STUDY: "st.attrs", Level.SERIES: "se.attrs", Level.INSTANCE: "i.attrs"}
# PN value of one DICOM JSON element ``{alias}.v``, as in the columns: groups joined by '='
_PN_TEXT = (
    "rtrim(concat_ws('=', coalesce({v} ->> 'Alphabetic', ''), coalesce({v} ->> 'Ideographic',"
    " ''), coalesce({v} ->> 'Phonetic', '')), '=')"
)
_TZ_OFFSET = "st.attrs #>> '{00080201,Value,0}'"  # TimezoneOffsetFromUTC of the study
_TAG = re.compile(r"[0-9A-F]{8}")
_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR"})


class Args:
    """Collects the ``$n`` arguments and which tables the conditions use."""

    def __init__(self) -> None:
        self.values: list[object] = []
        self.uses_patient = False

    def __call__(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def condition(key: MatchKey, query: QidoQuery, args: Args) -> str | None:
    """The WHERE condition of one key (None for universal matching)."""
    matcher, tag = key.matcher, key.attribute.tag
    if isinstance(matcher, Universal):
        return None
    fuzzy = key.leaf.vr == "PN" and query.fuzzymatching
    if key.path:
        match, empty = _sequence(ATTRS[key.attribute.level], key, fuzzy, args)
    elif tag in ARRAYS:
        column = ARRAYS[tag]
        match, empty = _array(column, matcher, args), f"cardinality({column}) = 0"
    elif tag in COLUMNS:
        column = COLUMNS[tag]
        args.uses_patient |= column.startswith("p.")
        match = text_condition(column, matcher, key.attribute.vr, fuzzy, args)
        empty = f"{column} = ''"
    else:
        match, empty = attrs_condition(
            ATTRS[key.attribute.level], key.attribute, matcher, fuzzy, args
        )
    if query.emptyvaluematching:
        return f"({match} OR {empty})"
    return match


def _literal_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):  # resolve_attribute gives upper-case hex; never user text
        raise ValueError(f"not a tag: {tag!r}")
    return f"'{tag}'"


def attrs_condition(
    obj: str, attribute: Attribute, matcher: Matcher, fuzzy: bool, args: Args, depth: int = 0
) -> tuple[str, str]:
    """(match, empty) conditions on attribute values held in the DICOM JSON object ``obj``."""
    tag, vr = _literal_tag(attribute.tag), attribute.vr
    alias = f"j{depth}"
    elements = (
        f"jsonb_array_elements(coalesce({obj} -> {tag} -> 'Value', '[]'::jsonb)) AS {alias}(v)"
    )
    value = _PN_TEXT.format(v=f"{alias}.v") if vr == "PN" else f"({alias}.v #>> '{{}}')"
    empty = f"NOT EXISTS (SELECT 1 FROM {elements} WHERE {value} <> '')"
    values = f"tessera_attr_values({obj}, {tag})"
    singles = _singles(matcher)
    if vr != "PN" and vr != "DT" and singles is not None:  # exact: indexable with GIN
        if len(singles) == 1:
            return f"{values} @> ARRAY[{args(singles[0])}::text]", empty
        return f"{values} && {args(singles)}::text[]", empty
    match = (
        f"EXISTS (SELECT 1 FROM {elements} WHERE {text_condition(value, matcher, vr, fuzzy, args)})"
    )
    prefilter = _prefilter(f"tessera_attr_text({obj}, {tag})", matcher, vr, fuzzy, args)
    return (f"({prefilter} AND {match})" if prefilter else match), empty


def _prefilter(text: str, matcher: Matcher, vr: str, fuzzy: bool, args: Args) -> str | None:
    """A condition on all values joined by '\\' that every match satisfies: it lets a
    trigram index on ``tessera_attr_text(attrs, tag)`` narrow the rows down first."""
    if not isinstance(matcher, Wildcard | Single):
        return None
    if vr == "PN":
        if fuzzy and isinstance(matcher, Single):
            return person_name(text, matcher, True, args)
        value = matcher.pattern if isinstance(matcher, Wildcard) else matcher.value
        pattern = like_pattern(value) if isinstance(matcher, Wildcard) else like_escape(value)
        if fuzzy:
            return f"tessera_fold({text}) LIKE tessera_fold({args('%' + pattern + '%')})"
        return f"{text} ILIKE {args('%' + pattern + '%')}"
    if vr in _STRING_VRS and isinstance(matcher, Wildcard):
        return f"{text} LIKE {args('%' + like_pattern(matcher.pattern) + '%')}"
    return None


def _sequence(obj: str, key: MatchKey, fuzzy: bool, args: Args) -> tuple[str, str]:
    """C.2.2.2.6: the sequence has an item (at every level of nesting) that matches."""
    items, item_cond, item_empty = [], "", ""
    chain = (key.attribute, *key.path[:-1])
    for depth, sequence in enumerate(chain):
        source = obj if depth == 0 else f"q{depth - 1}.item"
        tag = _literal_tag(sequence.tag)
        items.append(
            f"jsonb_array_elements(coalesce({source} -> {tag} -> 'Value', '[]'::jsonb))"
            f" AS q{depth}(item)"
        )
    item_cond, item_empty = attrs_condition(
        f"q{len(chain) - 1}.item", key.leaf, key.matcher, fuzzy, args, depth=len(chain)
    )
    where = ", ".join(items)
    match = f"EXISTS (SELECT 1 FROM {where} WHERE {item_cond})"
    return match, f"NOT EXISTS (SELECT 1 FROM {where} WHERE NOT ({item_empty}))"


def _singles(matcher: Matcher) -> list[str] | None:
    if isinstance(matcher, Single):
        return [matcher.value]
    if isinstance(matcher, AnyOf) and all(isinstance(a, Single) for a in matcher.alternatives):
        return [a.value for a in matcher.alternatives if isinstance(a, Single)]
    return None


def _array(column: str, matcher: Matcher, args: Args) -> str:
    singles = _singles(matcher)
    if singles is not None:  # containment / overlap: what a GIN index on the array serves
        if len(singles) == 1:
            return f"{column} @> ARRAY[{args(singles[0])}::text]"
        return f"{column} && {args(singles)}::text[]"
    match = text_condition("m.v", matcher, "", False, args)
    return f"EXISTS (SELECT 1 FROM unnest({column}) AS m(v) WHERE {match})"


def text_condition(x: str, matcher: Matcher, vr: str, fuzzy: bool, args: Args) -> str:
    """Condition on the text expression ``x`` (one stored value)."""
    if isinstance(matcher, AnyOf):
        singles = _singles(matcher)
        if vr not in ("PN", "DT") and singles is not None:
            return f"{x} = ANY({args(singles)}::text[])"
        return (
            "("
            + " OR ".join(text_condition(x, a, vr, fuzzy, args) for a in matcher.alternatives)
            + ")"
        )
    if vr == "DT" and isinstance(matcher, Single | Range):
        bounds = matcher if isinstance(matcher, Range) else Range(matcher.value, matcher.value)
        return _datetime_range(x, bounds, args)
    if isinstance(matcher, Range):
        parts = [f"{x} <> ''"]
        if matcher.low:
            parts.append(f"{x} >= {args(matcher.low)}")
        if matcher.high:
            parts.append(f"{x} <= {args(upper_bound(matcher.high, vr))}")
        return "(" + " AND ".join(parts) + ")"
    if vr == "PN" and isinstance(matcher, Single | Wildcard):
        return person_name(x, matcher, fuzzy, args)
    if isinstance(matcher, Wildcard):
        return f"{x} LIKE {args(like_pattern(matcher.pattern))}"
    if isinstance(matcher, Single):
        return f"{x} = {args(matcher.value)}"
    return "TRUE"


def _datetime_range(x: str, bounds: Range, args: Args) -> str:
    """A DT range (see :mod:`.dates`): in UTC when the query gives an offset."""
    try:
        utc = utc_bounds(bounds.low, bounds.high)
    except ValueError as e:
        raise QueryError(f"{bounds.low}-{bounds.high}: {e} (PS3.4 C.2.2.2.5)") from None
    parts = [f"{x} <> ''"]
    if utc is None:
        local = f"regexp_replace({x}, '[+-][0-9]{{4}}$', '')"
        if bounds.low:
            parts.append(f"{local} >= {args(strip_offset(bounds.low))}")
        if bounds.high:
            parts.append(f"{local} <= {args(upper_bound(bounds.high, 'DT'))}")
        return "(" + " AND ".join(parts) + ")"
    low, high, offset = utc
    moment = f"tessera_dt_utc({x}, coalesce({_TZ_OFFSET}, {args(offset)}))"
    if low:
        parts.append(f"{moment} >= {args(low)}")
    if high:
        parts.append(f"{moment} <= {args(high)}")
    return "(" + " AND ".join(parts) + ")"
