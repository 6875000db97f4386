"""The DICOM JSON of each search result, built by PostgreSQL (PS3.18 10.6.3.3, F.2).

Every result row is one ``jsonb`` document, turned into text by the database: the
service joins the texts into the response array without decoding and re-encoding them
in Python, which at OHIF's 101 studies per page was most of a search's time. The
document is, later parts winning:

1. ``{"vr": ...}`` for each Type R/U attribute of :func:`~.result.return_attributes`
   (present even when the entity has no value);
2. the wanted attributes of the level's DICOM JSON: ``study.attrs``, then ``series.attrs``
   (series and instance results), less the tags the layout puts there that are not
   wanted; then for instance results the wanted ones of ``instance.attrs`` (any tag: they
   are picked by ``tessera_pick``); with ``includefield=all`` the whole of the result's
   own level. ``attrs`` are the writer's cleaned copy (no NUL characters, which jsonb
   cannot hold and some stored metadata has) without top-level bulk data, so bulk data
   (Pixel Data, an encapsulated document...) is never a search result;
3. the computed attributes wanted: ModalitiesInStudy, SOPClassesInStudy, the counts,
   InstanceAvailability and RetrieveURL.

jsonb writes object keys shortest first, then in byte order: with 8-hex-digit tags that
is tag order, as PS3.18 F.2 examples show. BulkDataURIs inside sequences are stored
root-relative (``/studies/...``); instance results get them absolute by a text
replacement that only the JSON text ``"BulkDataURI": "/`` can match (a quote inside a
JSON string is escaped).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tessera.shared.qido.attributes import INSTANCE_COMPUTED, PATIENT_COUNTS, Level
from tessera.shared.qido.params import QidoQuery
from tessera.shared.qido.result import return_attributes

_ONLINE = """'{"vr": "CS", "Value": ["ONLINE"]}'::jsonb"""
_STUDY_ALL = ("00080056", "00080061", "00080062", "00201206", "00201208", *sorted(PATIENT_COUNTS))


def _values(vr: str, array: str) -> str:
    return (
        f'CASE WHEN cardinality({array}) = 0 THEN \'{{"vr": "{vr}"}}\'::jsonb'
        f" ELSE jsonb_build_object('vr', '{vr}', 'Value', to_jsonb({array})) END"
    )


def _count(column: str) -> str:
    return f"jsonb_build_object('vr', 'IS', 'Value', jsonb_build_array({column}))"


def _patient_count(expression: str, labels: str = "") -> str:
    """A count over the patient's studies; ``labels`` (an SQL text[] argument) limits
    it to the studies the caller may see."""
    visible = f" AND ps.labels && {labels}" if labels else ""
    return _count(
        f"(SELECT {expression} FROM study ps WHERE ps.patient_pk = st.patient_pk{visible})"
    )


_PATIENT_COUNTS = {
    "00201200": "count(*)",  # NumberOfPatientRelatedStudies
    "00201202": "coalesce(sum(ps.number_of_series), 0)",
    "00201204": "coalesce(sum(ps.number_of_instances), 0)",
}


_COMPUTED = {
    "00080056": _ONLINE,  # InstanceAvailability
    "00080061": _values("CS", "st.modalities_in_study"),  # ModalitiesInStudy
    "00080062": _values("UI", "st.sop_classes_in_study"),  # SOPClassesInStudy
    "00201206": _count("st.number_of_series"),  # NumberOfStudyRelatedSeries
    "00201208": _count("st.number_of_instances"),  # NumberOfStudyRelatedInstances
    "00201209": _count("se.number_of_instances"),  # NumberOfSeriesRelatedInstances
    # AvailableTransferSyntaxUID: the Transfer Syntax the instance is stored in
    "00083002": "jsonb_build_object('vr', 'UI', 'Value', jsonb_build_array(i.transfer_syntax_uid))",
    **{tag: _patient_count(expression) for tag, expression in _PATIENT_COUNTS.items()},
}
_URL = {
    Level.STUDY: "'/studies/' || st.study_instance_uid",
    Level.SERIES: "'/studies/' || st.study_instance_uid || '/series/' || se.series_instance_uid",
    Level.INSTANCE: "'/studies/' || st.study_instance_uid || '/series/' || se.series_instance_uid"
    " || '/instances/' || i.sop_instance_uid",
}


def document_sql(query: QidoQuery, args: Callable[[object], str], base_url: str) -> str:
    """The SQL expression of one result's DICOM JSON text (see the module docstring)."""
    wanted = return_attributes(query)
    defaults = {tag: {"vr": vr} for tag, vr in sorted(wanted.items()) if vr is not None}
    parts = [f"{args(json.dumps(defaults))}::text::jsonb"]
    tags: list[str] = []  # the $n of the wanted tags, once used

    def pick(attrs: str) -> str:
        tags[:] = tags or [f"{args(sorted(wanted))}::text[]"]
        return f"tessera_pick({attrs}, {tags[0]})"

    def without(attrs: str, held: frozenset[str]) -> str:
        """``attrs`` less the tags it may hold that are not wanted: deleting keys is
        several times cheaper for PostgreSQL than building a new object of the others."""
        unwanted = sorted(held - set(wanted))
        return f"({attrs} - {args(unwanted)}::text[])" if unwanted else attrs

    own, layout = query.include_all, query.layout
    if query.level is Level.INSTANCE:  # instance.attrs holds any tag: pick the wanted ones
        parts += [without("st.attrs", layout.study_tags), without("se.attrs", layout.series_tags)]
        parts.append("i.attrs" if own else pick("i.attrs"))
    elif query.level is Level.SERIES:
        series = "se.attrs" if own else without("se.attrs", layout.series_tags)
        parts += [without("st.attrs", layout.study_tags), series]
    else:
        parts.append("st.attrs" if own else without("st.attrs", layout.study_tags))
    computed = {tag for tag in wanted if tag in _COMPUTED}
    if query.level is not Level.INSTANCE:
        computed -= INSTANCE_COMPUTED
    if query.include_all and query.level is Level.STUDY:
        computed |= set(_STUDY_ALL)
    sql = dict(_COMPUTED)
    if query.labels is not None and computed & _PATIENT_COUNTS.keys():
        visible = f"{args(sorted(query.labels))}::text[]"
        sql.update({t: _patient_count(e, visible) for t, e in _PATIENT_COUNTS.items()})
    pairs = [f"'{tag}', {sql[tag]}" for tag in sorted(computed)]
    if "00081190" in wanted:
        url = f"{args(base_url)}::text || {_URL[query.level]}"
        pairs.append(
            f"'00081190', jsonb_build_object('vr', 'UR', 'Value', jsonb_build_array({url}))"
        )
    if pairs:
        parts.append(f"jsonb_build_object({', '.join(pairs)})")
    document = f"({' || '.join(parts)})::text"
    if query.level is Level.INSTANCE:
        absolute = f"""'"BulkDataURI": "' || {args(base_url)}::text || '/'"""
        document = f"""replace({document}, '"BulkDataURI": "/', {absolute})"""
    return document


def body(documents: list[str]) -> bytes:
    """The response payload: the JSON array of the result documents (UTF-8)."""
    return ("[" + ",".join(documents) + "]").encode()
