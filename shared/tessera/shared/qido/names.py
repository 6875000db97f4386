"""Person Name matching (PS3.4 C.2.2.2.1, C.2.2.2.4; PS3.18 8.3.4.2 fuzzy matching) and
the LIKE pattern helpers.

A PN is stored as its component groups (Alphabetic, Ideographic, Phonetic) joined by
'=', as in ``patient.patient_name``. Matching is case-insensitive (our conformance:
C.2.2.2.1 leaves PN case sensitivity to the SCP). ``fuzzymatching=true`` compares the
folded forms of migration 0003's ``tessera_fold`` (NFKC, accents and ligatures removed by
PostgreSQL's ``unaccent``, lower case); for PatientName the folded form is a stored
(generated) column, ``patient.patient_name_folded``, with a trigram index.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tessera.shared.qido.params import Single, Wildcard

__all__ = ["WORD_SEPARATORS", "like_escape", "like_pattern", "person_name"]

# where a word of a name starts: after a component ('^'), group ('='), space, comma, hyphen
WORD_SEPARATORS = r"[\s^=,\-]+"
_WORD_START = "(^|[-=,^[:space:]\\\\])"  # and '\\' between values, see _prefilter


def person_name(
    x: str, matcher: Single | Wildcard, fuzzy: bool, args: Callable[[object], str]
) -> str:
    """PN matching on ``x`` (groups joined by '=').

    Without fuzzy matching: case-insensitive, against the whole value when the query
    names component groups ('=' in it), else against each group. With fuzzy matching
    (PS3.18 8.3.4.2, our definition): both sides are folded by ``tessera_fold`` (NFKC,
    accents removed by ``unaccent``, lower case); a single value matches if each of its
    words (split at spaces, ``^``, ``=``, ``,`` and ``-``) starts some word of the name,
    in any order (``joh smi`` matches ``Smith^John``, ``muller`` matches ``Müller``); a
    value with wildcards matches as without fuzzy matching, but on the folded forms.
    """
    if fuzzy and isinstance(matcher, Single):
        words = [w for w in re.split(WORD_SEPARATORS, matcher.value) if w]
        if words:
            folded = fold(x)
            conditions = []
            for word in words:
                w = f"tessera_fold({args(word)})"
                like = f"replace(replace(replace({w}, '\\', '\\\\'), '%', '\\%'), '_', '\\_')"
                regex = f"regexp_replace({w}, '([^[:alnum:]])', '\\\\\\1', 'g')"
                conditions.append(f"{folded} LIKE ('%' || {like} || '%')")
                conditions.append(f"{folded} ~ ('{_WORD_START}' || {regex})")
            return "(" + " AND ".join(conditions) + ")"
    if isinstance(matcher, Single):
        value, pattern = matcher.value, like_escape(matcher.value)
    else:
        value, pattern = matcher.pattern, like_pattern(matcher.pattern)
    if fuzzy:
        x, operator, query = fold(x), "LIKE", "tessera_fold({})"
    else:
        operator, query = "ILIKE", "{}"
    if "=" in value:  # the query names component groups: compare the whole value
        return f"{x} {operator} {query.format(args(pattern))}"
    # Any group may match. The first condition follows from the second; it is there so
    # that a trigram index on the column can answer it, and it is enough for *text*.
    anywhere = f"{x} {operator} {query.format(args('%' + pattern + '%'))}"
    inner = value[1:-1]
    if len(value) > 2 and value[0] == value[-1] == "*" and not set(inner) & set("*?"):
        return anywhere  # it cannot match across a group boundary ('=' is not in it)
    groups = f"unnest(string_to_array({x}, '=')) AS g(v)"
    each = f"g.v {operator} {query.format(args(pattern))}"
    return f"({anywhere} AND EXISTS (SELECT 1 FROM {groups} WHERE {each}))"


# columns whose folded form is stored (migration 0003), so that a fuzzy match does not
# fold every candidate row again
FOLDED_COLUMNS = {"p.patient_name": "p.patient_name_folded"}


def fold(x: str) -> str:
    """The ``tessera_fold`` form of the PN expression ``x``."""
    return FOLDED_COLUMNS.get(x, f"tessera_fold({x})")


def like_escape(value: str) -> str:
    """``value`` as a LIKE pattern matching only itself (backslash is LIKE's escape)."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_pattern(dicom: str) -> str:
    """A DICOM wildcard value (C.2.2.2.4) as a LIKE pattern."""
    return like_escape(dicom).replace("*", "%").replace("?", "_")
