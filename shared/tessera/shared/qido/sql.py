"""Build the parameterised SELECT for a :class:`QidoQuery` on a shard's schema.

Values are always asyncpg ``$n`` arguments, never SQL text. The condition of each key is
:mod:`.match`'s (PS3.4 C.2.2.2); a DA key given with its TM partner, one of them a range,
becomes one combined condition (C.2.2.2.5.1, :mod:`.dates`), written as a row comparison
``(study_date, study_time) >= ($1, $2)`` that the ``study_order`` index serves.

Results are in a stable order (PS3.18 8.3.4.4.1 requires repeatable paging): studies
newest first (StudyDate, StudyTime, then StudyInstanceUID, descending: the ``study_order``
index of migration 0004); series by SeriesNumber as an integer, then as text, then
SeriesInstanceUID; instances by InstanceNumber as an integer, then as text, then
SOPInstanceUID. A search across studies or series orders by the parents first. The UIDs
make the order total, so pages never overlap or skip, however many studies share a date;
and, unlike a row id, they are in every result, so the router can merge the pages of
several shards in this very order (:mod:`tessera.router.qido_fanout`). Text is compared
``COLLATE "C"`` (byte order, the columns' collation since migration 0004), which is the
order of Python strings.

Each row is the result's DICOM JSON, built by PostgreSQL (:mod:`.render`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tessera.shared.qido.attributes import Level
from tessera.shared.qido.dates import DATE_TIME_PAIRS, combined_bounds, upper_bound
from tessera.shared.qido.match import (
    ARRAYS,
    ATTRS,
    COLUMNS,
    Args,
    condition,
    like_escape,
    like_pattern,
)
from tessera.shared.qido.params import MatchKey, QidoQuery, Universal
from tessera.shared.qido.render import document_sql

__all__ = [
    "ARRAYS",
    "COLUMNS",
    "Page",
    "Sql",
    "count_sql",
    "like_escape",
    "like_pattern",
    "page_of",
    "search_sql",
    "upper_bound",
]

_FROM = {
    Level.STUDY: "study st",
    Level.SERIES: "series se JOIN study st ON st.pk = se.study_pk",
    Level.INSTANCE: "instance i JOIN series se ON se.pk = i.series_pk"
    " JOIN study st ON st.pk = se.study_pk",
}
# How the sessions that run these statements should plan them (the index service's pool,
# the benchmark's EXPLAIN): for the values of each search (a generic plan cannot tell
# ILIKE '%smi%', a trigram index scan, from ILIKE '%', a walk in date order), and without
# parallel workers: a search takes milliseconds, a parallel seq scan only looks cheaper
# to the planner than a trigram bitmap scan, and the CPUs serve concurrent searches.
SESSION_SETTINGS = {"plan_cache_mode": "force_custom_plan", "max_parallel_workers_per_gather": "0"}
_STUDY_ORDER = (
    'st.study_date COLLATE "C" DESC, st.study_time COLLATE "C" DESC,'
    ' st.study_instance_uid COLLATE "C" DESC'
)
_SERIES_ORDER = (
    "CASE WHEN se.series_number ~ '^[+-]?[0-9]{1,9}$' THEN se.series_number::integer END"
    ' NULLS LAST, se.series_number COLLATE "C", se.series_instance_uid COLLATE "C"'
)
_INSTANCE_ORDER = (
    'i.instance_number_int NULLS LAST, i.instance_number COLLATE "C",'
    ' i.sop_instance_uid COLLATE "C"'
)


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


def search_sql(query: QidoQuery, page: Page, base_url: str = "") -> Sql:
    """Rows of one page plus one more (so the caller knows whether more remain); each row
    is one column, ``doc``: the result's DICOM JSON text (:mod:`.render`), whose
    RetrieveURL and BulkDataURIs start with ``base_url``."""
    args = Args()
    where = _where(query, args)
    document = document_sql(query, args, base_url)
    text = (
        f"SELECT {document} AS doc FROM {_from(query.level, args)} WHERE {where}"
        f" ORDER BY {_order(query)} LIMIT {args(page.limit + 1)} OFFSET {args(page.offset)}"
    )
    return Sql(text, tuple(args.values))


def count_sql(query: QidoQuery) -> Sql:
    """The number of matches (for the Warning's count of remaining results)."""
    args = Args()
    where = _where(query, args)
    return Sql(f"SELECT count(*) FROM {_from(query.level, args)} WHERE {where}", tuple(args.values))


def _from(level: Level, args: Args) -> str:
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


def _where(query: QidoQuery, args: Args) -> str:
    conditions = []
    if query.labels is not None:
        conditions.append(f"st.labels && {args(sorted(query.labels))}::text[]")
    if query.scope.study_instance_uid is not None:
        conditions.append(f"st.study_instance_uid = {args(query.scope.study_instance_uid)}")
    if query.scope.series_instance_uid is not None:
        conditions.append(f"se.series_instance_uid = {args(query.scope.series_instance_uid)}")
    combined, keys = _combined_date_time(query, args)
    conditions += combined
    for key in keys:
        each = condition(key, query, args)
        if each is not None:
            conditions.append(each)
    return " AND ".join(conditions) or "TRUE"


def _first_value(key: MatchKey) -> str:
    tag = key.attribute.tag
    if tag in COLUMNS:
        return COLUMNS[tag]
    return f"coalesce({ATTRS[key.attribute.level]} #>> '{{{tag},Value,0}}', '')"


def _combined_date_time(query: QidoQuery, args: Args) -> tuple[list[str], list[MatchKey]]:
    """C.2.2.2.5.1 conditions for the DA/TM pairs given together, and the other keys.
    Not with emptyvaluematching, where each key keeps its own empty-value rule."""
    plain = {k.attribute.tag: k for k in query.matches if not k.path}
    used: set[str] = set()
    conditions = []
    for date_tag, time_tag in DATE_TIME_PAIRS:
        date, time = plain.get(date_tag), plain.get(time_tag)
        if date is None or time is None or query.emptyvaluematching:
            continue
        if isinstance(date.matcher, Universal) or isinstance(time.matcher, Universal):
            continue
        bounds = combined_bounds(date.matcher, time.matcher)
        if bounds is None:
            continue
        d, t = _first_value(date), _first_value(time)
        parts = [f"{d} <> ''"]
        for bound, op in zip(bounds, (">=", "<="), strict=True):
            if bound is not None:
                parts.append(f"({d}, {t}) {op} ({args(bound[0])}::text, {args(bound[1])}::text)")
        conditions.append("(" + " AND ".join(parts) + ")")
        used |= {date_tag, time_tag}
    rest = [k for k in query.matches if k.path or k.attribute.tag not in used]
    return conditions, rest
