"""Build the parameterised SELECT for a :class:`QidoQuery` on a shard's schema.

Values are always asyncpg ``$n`` arguments, never SQL text. Attributes with their own
column (``study.study_date``, ``patient.patient_name``, ``series.modality``...) match on
the column; the others on the level's DICOM JSON (``study.attrs``, ``series.attrs``,
the instance's ``attrs``), where a multi-valued attribute matches on any value.

Matching per PS3.4 C.2.2.2, on the stored DICOM string forms:

* Single Value (C.2.2.2.1): equality, case-sensitive, except PN, which is matched
  case-insensitively against each component group (Alphabetic, Ideographic, Phonetic).
  C.2.2.2.1 leaves PN case sensitivity to the SCP, which may declare "case-insensitive
  matching" of PN in its conformance statement; this is ours.
* List of UIDs (C.2.2.2.2) and multiple values: ``= ANY($n::text[])``.
* Universal (C.2.2.2.3): no condition.
* Wildcard (C.2.2.2.4): ``LIKE`` (``ILIKE`` for PN) with ``%``, ``_`` and ``\\``
  escaped, then ``*`` -> ``%`` and ``?`` -> ``_``.
* Range (C.2.2.2.5), DA/TM/DT: string comparison on the fixed-width forms; an upper
  bound is padded to the end of its precision (``-1000`` includes 10:00:59.999999).
  StudyDate and StudyTime ranges are matched each on their own (not combined).
* ModalitiesInStudy / SOPClassesInStudy: any series (instance) of the study has the
  value, on the ``study.modalities_in_study`` / ``sop_classes_in_study`` arrays.
* Fuzzy PN matching and Empty Value Matching: see :class:`QidoQuery`.

Results are in a stable order (PS3.18 8.3.4.4.1 requires repeatable paging): studies
newest first (StudyDate, StudyTime, then row id, descending); series by SeriesNumber as
an integer, then row id; instances by InstanceNumber as an integer, then row id. A
search across studies or series orders by the parents first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tessera.shared.qido.attributes import Level
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
_ATTRS = {Level.STUDY: "st.attrs", Level.SERIES: "se.attrs", Level.INSTANCE: "i.attrs"}
_FROM = {
    Level.STUDY: "study st",
    Level.SERIES: "series se JOIN study st ON st.pk = se.study_pk",
    Level.INSTANCE: "instance i JOIN series se ON se.pk = i.series_pk"
    " JOIN study st ON st.pk = se.study_pk",
}
_STUDY_COLUMNS = (
    "st.study_instance_uid, st.attrs AS study_attrs, st.modalities_in_study,"
    " st.sop_classes_in_study, st.number_of_series, st.number_of_instances AS study_instances"
)
_SERIES_COLUMNS = (
    "se.series_instance_uid, se.attrs AS series_attrs, se.number_of_instances AS series_instances"
)
_SELECT = {
    Level.STUDY: _STUDY_COLUMNS,
    Level.SERIES: f"{_STUDY_COLUMNS}, {_SERIES_COLUMNS}",
    Level.INSTANCE: "st.study_instance_uid, st.modalities_in_study, st.sop_classes_in_study,"
    " st.number_of_series, st.number_of_instances AS study_instances, se.series_instance_uid,"
    " se.number_of_instances AS series_instances, i.sop_instance_uid, i.metadata",
}
_STUDY_ORDER = "st.study_date DESC, st.study_time DESC, st.pk DESC"
_SERIES_ORDER = (
    "CASE WHEN se.series_number ~ '^[+-]?[0-9]{1,9}$' THEN se.series_number::integer END"
    " NULLS LAST, se.series_number, se.pk"
)
_INSTANCE_ORDER = "i.instance_number_int NULLS LAST, i.instance_number, i.pk"
# PN value of one DICOM JSON element, as stored in the columns: groups joined by '='
_PN_TEXT = (
    "rtrim(concat_ws('=', coalesce(j.v ->> 'Alphabetic', ''), coalesce(j.v ->> 'Ideographic',"
    " ''), coalesce(j.v ->> 'Phonetic', '')), '=')"
)
_FUZZY_WORD_START = "(^|[=,^[:space:]])"
# an upper bound is padded with the end of these to the full precision of its VR
_UPPER = {"TM": "235959.999999", "DT": "99991231235959.999999"}


@dataclass(frozen=True, slots=True)
class Sql:
    text: str
    args: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Page:
    """Which rows to return: ``limit`` after ``offset`` (PS3.18 8.3.4.4).

    ``server_limited`` is true when ``limit`` is the server's maximum: if more matches
    remain, the response carries the PS3.18 8.3.4.4.1 Warning.
    """

    limit: int
    offset: int
    server_limited: bool


def page_of(query: QidoQuery, max_limit: int) -> Page:
    limit = max_limit if query.limit is None else min(query.limit, max_limit)
    return Page(limit, query.offset, limit == max_limit)


class _Args:
    """Collects the arguments and which tables the conditions use."""

    def __init__(self) -> None:
        self.values: list[object] = []
        self.uses_patient = False

    def __call__(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def search_sql(query: QidoQuery, page: Page) -> Sql:
    """Rows of one page plus one more (so the caller knows whether more remain)."""
    args = _Args()
    where = _where(query, args)
    order = _order(query)
    text = (
        f"SELECT {_SELECT[query.level]} FROM {_from(query.level, args)} WHERE {where}"
        f" ORDER BY {order} LIMIT {args(page.limit + 1)} OFFSET {args(page.offset)}"
    )
    return Sql(text, tuple(args.values))


def count_sql(query: QidoQuery) -> Sql:
    """The number of matches (for the Warning's count of remaining results)."""
    args = _Args()
    where = _where(query, args)
    return Sql(f"SELECT count(*) FROM {_from(query.level, args)} WHERE {where}", tuple(args.values))


def _from(level: Level, args: _Args) -> str:
    joins = " JOIN patient p ON p.pk = st.patient_pk" if args.uses_patient else ""
    return _FROM[level] + joins


def _order(query: QidoQuery) -> str:
    parts = []
    if query.level is Level.STUDY or query.scope.study_instance_uid is None:
        parts.append(_STUDY_ORDER)
    if query.level is not Level.STUDY and (
        query.level is Level.SERIES or query.scope.series_instance_uid is None
    ):
        parts.append(_SERIES_ORDER)
    if query.level is Level.INSTANCE:
        parts.append(_INSTANCE_ORDER)
    return ", ".join(parts)


def _where(query: QidoQuery, args: _Args) -> str:
    conditions = []
    if query.scope.study_instance_uid is not None:
        conditions.append(f"st.study_instance_uid = {args(query.scope.study_instance_uid)}")
    if query.scope.series_instance_uid is not None:
        conditions.append(f"se.series_instance_uid = {args(query.scope.series_instance_uid)}")
    for key in query.matches:
        condition = _condition(key, query, args)
        if condition is not None:
            conditions.append(condition)
    return " AND ".join(conditions) or "TRUE"


def _condition(key: MatchKey, query: QidoQuery, args: _Args) -> str | None:
    matcher, tag = key.matcher, key.attribute.tag
    if isinstance(matcher, Universal):
        return None
    pn = key.attribute.vr == "PN"
    fuzzy = pn and query.fuzzymatching
    if tag in ARRAYS:
        column = ARRAYS[tag]
        condition, empty = _array(column, matcher, args), f"cardinality({column}) = 0"
    elif tag in COLUMNS:
        column = COLUMNS[tag]
        args.uses_patient |= column.startswith("p.")
        condition = _text(column, matcher, key.attribute.vr, fuzzy, args)
        empty = f"{column} = ''"
    else:
        attrs = _ATTRS[key.attribute.level]
        elements = (
            f"jsonb_array_elements(coalesce(({attrs}) -> {args(tag)}::text -> 'Value',"
            " '[]'::jsonb)) AS j(v)"
        )
        value = _PN_TEXT if pn else "(j.v #>> '{}')"
        match = _text(value, matcher, key.attribute.vr, fuzzy, args)
        condition = f"EXISTS (SELECT 1 FROM {elements} WHERE {match})"
        empty = f"NOT EXISTS (SELECT 1 FROM {elements} WHERE {value} <> '')"
    if query.emptyvaluematching:
        return f"({condition} OR {empty})"
    return condition


def _array(column: str, matcher: Matcher, args: _Args) -> str:
    if isinstance(matcher, Single):
        return f"{args(matcher.value)}::text = ANY({column})"
    if isinstance(matcher, AnyOf) and all(isinstance(a, Single) for a in matcher.alternatives):
        values = [a.value for a in matcher.alternatives if isinstance(a, Single)]
        return f"{column} && {args(values)}::text[]"
    match = _text("m.v", matcher, "", False, args)
    return f"EXISTS (SELECT 1 FROM unnest({column}) AS m(v) WHERE {match})"


def _text(x: str, matcher: Matcher, vr: str, fuzzy: bool, args: _Args) -> str:
    """Condition on the text expression ``x`` (one stored value)."""
    if isinstance(matcher, AnyOf):
        if vr != "PN" and all(isinstance(a, Single) for a in matcher.alternatives):
            values = [a.value for a in matcher.alternatives if isinstance(a, Single)]
            return f"{x} = ANY({args(values)}::text[])"
        return "(" + " OR ".join(_text(x, a, vr, fuzzy, args) for a in matcher.alternatives) + ")"
    if isinstance(matcher, Range):
        bounds = [f"{x} <> ''"]
        if matcher.low:
            bounds.append(f"{x} >= {args(matcher.low)}")
        if matcher.high:
            bounds.append(f"{x} <= {args(upper_bound(matcher.high, vr))}")
        return "(" + " AND ".join(bounds) + ")"
    if vr == "PN" and isinstance(matcher, Single | Wildcard):
        return _person_name(x, matcher, fuzzy, args)
    if isinstance(matcher, Wildcard):
        return f"{x} LIKE {args(like_pattern(matcher.pattern))}"
    if isinstance(matcher, Single):
        return f"{x} = {args(matcher.value)}"
    return "TRUE"


def _person_name(x: str, matcher: Single | Wildcard, fuzzy: bool, args: _Args) -> str:
    if isinstance(matcher, Single):
        words = [w for w in re.split(r"[\s^=,]+", matcher.value) if w]
        if fuzzy and words:
            starts = [f"{x} ~* {args(_FUZZY_WORD_START + _regex_literal(w))}" for w in words]
            return "(" + " AND ".join(starts) + ")"
        value, pattern = matcher.value, like_escape(matcher.value)
    else:
        value, pattern = matcher.pattern, like_pattern(matcher.pattern)
    if "=" in value:  # the query names component groups: compare the whole value
        return f"{x} ILIKE {args(pattern)}"
    # Any group may match. The first condition follows from the second; it is there so
    # that a trigram index on the column can answer it.
    anywhere = f"{x} ILIKE {args('%' + pattern + '%')}"
    groups = f"unnest(string_to_array({x}, '=')) AS g(v)"
    return f"({anywhere} AND EXISTS (SELECT 1 FROM {groups} WHERE g.v ILIKE {args(pattern)}))"


def like_escape(value: str) -> str:
    """``value`` as a LIKE pattern matching only itself (backslash is LIKE's escape)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_pattern(dicom: str) -> str:
    """A DICOM wildcard value (C.2.2.2.4) as a LIKE pattern."""
    return like_escape(dicom).replace("*", "%").replace("?", "_")


def _regex_literal(word: str) -> str:
    # PostgreSQL ARE: a backslash before a non-alphanumeric character makes it literal
    return "".join(c if c.isalnum() else "\\" + c for c in word)


def upper_bound(high: str, vr: str) -> str:
    """An inclusive upper bound padded to full precision: TM ``10`` -> ``105959.999999``."""
    if vr == "DT":
        high = re.sub(r"[+-]\d{4}$", "", high)  # offsets are not compared
    full = _UPPER.get(vr, "")
    return high + full[len(high) :] if len(high) < len(full) else high
