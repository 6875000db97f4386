"""Study labels (README "Security"): their syntax, and which labels a store gives.

A label is 1-64 letters, digits, ``.``, ``_``, ``:`` or ``-``, starting with a letter or
digit. A STOW-RS request may name labels with ``label`` query parameters. A storer
limited to labels gives its own labels unless it names some of them, and may not name
others (403); an unrestricted storer gives exactly the labels it names.
"""

from __future__ import annotations

import re

from tessera.shared.auth.principal import Principal
from tessera.shared.errors import BadRequest, Forbidden

LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def check_labels(labels: object) -> list[str]:
    """Sorted distinct labels; :class:`BadRequest` if ``labels`` is not a list of them."""
    if not isinstance(labels, list | tuple) or not all(
        isinstance(x, str) and LABEL.fullmatch(x) for x in labels
    ):
        raise BadRequest(
            "labels: a list of 1-64 letters, digits, '.', '_', ':' or '-', each starting"
            " with a letter or digit"
        )
    return sorted(set(labels))


def stored_labels(
    principal: Principal, asked: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """The labels to give the stored studies, and the storer's own (None: unrestricted)."""
    named = tuple(check_labels(asked))
    if principal.labels is None:
        return named, None
    if set(named) - principal.labels:
        raise Forbidden("this credential may only give its own labels")
    own = tuple(sorted(principal.labels))
    return named or own, own
