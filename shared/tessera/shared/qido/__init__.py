"""QIDO-RS (PS3.18 10.6): query parsing, SQL building and result documents.

No service logic and no I/O: the index service runs the SQL against its shard, the
router reuses the parsing (and, later, the merging) when it fans a search out.

    attributes  keyword or tag -> Attribute  (PS3.18 8.3.4.1: tag, VR, level)
    params      query string   -> QidoQuery  (PS3.18 8.3.4, PS3.4 C.2.2.2 value forms)
    sql         QidoQuery      -> Sql        (parameterised SELECT for one shard's schema)
    match       MatchKey       -> condition  (PS3.4 C.2.2.2 matching, C.2.2.2.6 sequences)
    names       PN matching, fuzzy matching (PS3.18 8.3.4.2), LIKE patterns
    dates       DA/TM/DT ranges, UTC offsets, combined date-time (C.2.2.2.5.1)
    result      which attributes a result holds (PS3.18 10.6.3.3), the Warning
    render      the result's DICOM JSON, built by PostgreSQL
"""

from tessera.shared.qido.attributes import Attribute, Level, resolve_attribute
from tessera.shared.qido.params import (
    AnyOf,
    Matcher,
    MatchKey,
    QidoQuery,
    Range,
    Scope,
    Single,
    Universal,
    Wildcard,
    parse_query,
)

__all__ = [
    "AnyOf",
    "Attribute",
    "Level",
    "MatchKey",
    "Matcher",
    "QidoQuery",
    "Range",
    "Scope",
    "Single",
    "Universal",
    "Wildcard",
    "parse_query",
    "resolve_attribute",
]
