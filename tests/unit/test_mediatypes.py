"""RFC 9110 media types and Accept headers as DICOMweb clients send them (PS3.18 8.7)."""

from __future__ import annotations

import pytest

from tessera.shared.errors import BadRequest
from tessera.shared.mediatypes import AcceptRange, MediaType, parse_accept, parse_media_type

DICOM_TS = "1.2.840.10008.1.2.1"
JPEG_TS = "1.2.840.10008.1.2.4.50"


@pytest.mark.parametrize(
    ("value", "essence", "params"),
    [
        ("application/dicom", "application/dicom", {}),
        ("Application/DICOM+JSON", "application/dicom+json", {}),
        ("  application/dicom  ", "application/dicom", {}),
        ("application/dicom;", "application/dicom", {}),
        ("application/dicom ; ; ", "application/dicom", {}),
        (
            'multipart/related; type="application/dicom"; boundary=abc123',
            "multipart/related",
            {"type": "application/dicom", "boundary": "abc123"},
        ),
        # unquoted "/" in a value: not a token, but OHIF and dicomweb-client send it
        (
            "multipart/related; type=application/dicom; boundary=Xy-Z",
            "multipart/related",
            {"type": "application/dicom", "boundary": "Xy-Z"},
        ),
        # parameter names are case-insensitive, values keep their case
        ("multipart/related; BOUNDARY=AbC", "multipart/related", {"boundary": "AbC"}),
        # whitespace around "=" and quoted-pair escapes
        ('text/plain; charset = "utf-8"', "text/plain", {"charset": "utf-8"}),
        (r'text/plain; x="a \"b\" \\ c"', "text/plain", {"x": r'a "b" \ c'}),
        ('text/plain; x="a;b,c"; y=1', "text/plain", {"x": "a;b,c", "y": "1"}),
        ('text/plain; x=""', "text/plain", {"x": ""}),
        # fo-dicom style boundary with spaces, quoted
        (
            'multipart/related; type="application/dicom"; boundary="DICOM DATA BOUNDARY"',
            "multipart/related",
            {"type": "application/dicom", "boundary": "DICOM DATA BOUNDARY"},
        ),
        (
            f'application/dicom; transfer-syntax="{JPEG_TS}"',
            "application/dicom",
            {"transfer-syntax": JPEG_TS},
        ),
        # a repeated parameter: the first one counts
        ("text/plain; a=1; A=2", "text/plain", {"a": "1"}),
    ],
)
def test_parse_media_type(value: str, essence: str, params: dict[str, str]) -> None:
    mt = parse_media_type(value)
    assert mt.essence == essence
    assert mt.params == params


@pytest.mark.parametrize(
    "value",
    [
        "",
        "application",
        "application/",
        "/dicom",
        "application/dicom/x",
        "application dicom",
        "*/*",
        "application/*",
        "text/plain; charset",
        "text/plain; =x",
        'text/plain; x="unterminated',
        'text/plain; x="a"b',
        "text/plain; x=a b",
        "text/plain x=y",
    ],
)
def test_parse_media_type_rejects(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_media_type(value)


@pytest.mark.parametrize(
    ("mt", "text"),
    [
        (MediaType("application", "dicom"), "application/dicom"),
        (
            MediaType("multipart", "related", {"type": "application/dicom", "boundary": "b1"}),
            'multipart/related; type="application/dicom"; boundary=b1',
        ),
        (MediaType("a", "b", {"x": 'q"uo\\te'}), r'a/b; x="q\"uo\\te"'),
        (MediaType("a", "b", {"x": ""}), 'a/b; x=""'),
        (MediaType("a", "b", {"x": "has space"}), 'a/b; x="has space"'),
        (MediaType("A", "B", {"X": DICOM_TS}), f"a/b; x={DICOM_TS}"),
    ],
)
def test_str_round_trips(mt: MediaType, text: str) -> None:
    assert str(mt) == text
    assert parse_media_type(text) == mt


def test_media_type_is_hashable_and_compares_params_unordered() -> None:
    a = MediaType("a", "b", {"x": "1", "y": "2"})
    b = parse_media_type("A/B; y=2; x=1")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


def _ranges(header: str | None) -> list[tuple[str, dict[str, str], float]]:
    return [(r.essence, r.params, r.q) for r in parse_accept(header)]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, [("*/*", {}, 1.0)]),
        ("", [("*/*", {}, 1.0)]),
        (" , ,", [("*/*", {}, 1.0)]),
        ("*", [("*/*", {}, 1.0)]),
        ("*; q=.2", [("*/*", {}, 0.2)]),
        ("application/dicom+json", [("application/dicom+json", {}, 1.0)]),
        # dicomweb-client QIDO / metadata
        (
            "application/dicom+json, */*;q=0.8",
            [("application/dicom+json", {}, 1.0), ("*/*", {}, 0.8)],
        ),
        # OHIF: quoted type, transfer-syntax=*
        (
            'multipart/related; type="application/octet-stream"; transfer-syntax=*',
            [
                (
                    "multipart/related",
                    {"type": "application/octet-stream", "transfer-syntax": "*"},
                    1.0,
                )
            ],
        ),
        # OHIF / dicomweb-client: unquoted type, quoted transfer syntax
        (
            f'multipart/related; type=application/octet-stream; transfer-syntax="{JPEG_TS}"',
            [
                (
                    "multipart/related",
                    {"type": "application/octet-stream", "transfer-syntax": JPEG_TS},
                    1.0,
                )
            ],
        ),
        # dicomweb-client retrieve_instance with several acceptable transfer syntaxes
        (
            f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_TS}; q=0.9, '
            f'multipart/related; type="application/dicom"; transfer-syntax={DICOM_TS}',
            [
                (
                    "multipart/related",
                    {"type": "application/dicom", "transfer-syntax": DICOM_TS},
                    1.0,
                ),
                (
                    "multipart/related",
                    {"type": "application/dicom", "transfer-syntax": JPEG_TS},
                    0.9,
                ),
            ],
        ),
        # commas inside quotes do not split
        ('a/b; x="1,2", c/d', [("a/b", {"x": "1,2"}, 1.0), ("c/d", {}, 1.0)]),
        # q is a weight, not a parameter, wherever it stands; other parameters are kept
        ("a/b; q=0.5; x=1", [("a/b", {"x": "1"}, 0.5)]),
        ("a/b;Q=0.5", [("a/b", {}, 0.5)]),
        # specificity breaks q ties (RFC 9110 §12.5.1 example)
        (
            "*/*, text/*, text/plain, text/plain;format=flowed",
            [
                ("text/plain", {"format": "flowed"}, 1.0),
                ("text/plain", {}, 1.0),
                ("text/*", {}, 1.0),
                ("*/*", {}, 1.0),
            ],
        ),
        # stable otherwise
        ("b/b, a/a, c/c;q=1.000", [("b/b", {}, 1.0), ("a/a", {}, 1.0), ("c/c", {}, 1.0)]),
        # q=0 is kept, last
        ("a/a;q=0, */*", [("*/*", {}, 1.0), ("a/a", {}, 0.0)]),
        # invalid ranges are ignored
        ("a/a;q=2, b/b;q=x, c/c;q=-1, d/d;q=0.5", [("d/d", {}, 0.5)]),
        ("*/json, x, a/b;c, e/f", [("e/f", {}, 1.0)]),
        ("garbage", []),
        # repeated Accept headers joined with commas
        (
            "application/json,application/dicom+json;q=0.9 , image/jpeg;q=0.1",
            [
                ("application/json", {}, 1.0),
                ("application/dicom+json", {}, 0.9),
                ("image/jpeg", {}, 0.1),
            ],
        ),
    ],
)
def test_parse_accept(
    header: str | None, expected: list[tuple[str, dict[str, str], float]]
) -> None:
    assert _ranges(header) == expected


@pytest.mark.parametrize(
    ("range_", "offer", "result"),
    [
        ("*/*", "application/dicom", True),
        ("application/*", "application/dicom", True),
        ("application/*", "image/jpeg", False),
        ("application/dicom", "application/dicom; transfer-syntax=1.2", True),
        ("application/dicom", "application/dicom+json", False),
    ],
)
def test_matches(range_: str, offer: str, result: bool) -> None:
    assert parse_accept(range_)[0].matches(offer) is result
    assert parse_accept(range_)[0].matches(parse_media_type(offer)) is result


def test_accept_range_str() -> None:
    assert str(AcceptRange(parse_media_type("a/b; x=1"), 0.5)) == "a/b; x=1; q=0.5"
    assert str(AcceptRange(parse_media_type("a/b"))) == "a/b"
    assert [str(r) for r in parse_accept("a/b;q=0, c/d;q=0.125")] == ["c/d; q=0.125", "a/b; q=0"]
