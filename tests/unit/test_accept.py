"""One reading of what a request accepts, for every service (PS3.18 8.3.3.1)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from tessera.shared.accept import accept_ranges, requested_accept
from tessera.shared.errors import NotAcceptable


def request(query: str = "", accept: str | None = None) -> Request:
    headers = [(b"accept", accept.encode())] if accept is not None else []
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": query.encode()}
    return Request(scope | {"headers": headers})


def test_the_query_parameter_replaces_the_header():
    r = request("accept=application/dicom%2Bjson", "application/json")
    assert requested_accept(r) == "application/dicom+json"


def test_several_query_values_are_one_list():
    r = request("accept=application/json&accept=application/dicom%2Bjson")
    assert [x.essence for x in accept_ranges(r)] == ["application/json", "application/dicom+json"]


def test_an_unescaped_plus_in_the_query_is_restored():
    assert requested_accept(request("accept=application/dicom+json")) == "application/dicom+json"
    assert requested_accept(request("accept=application/dicom+xml")) == "application/dicom+xml"


def test_without_the_parameter_the_header_counts():
    assert requested_accept(request("", "image/jpeg")) == "image/jpeg"
    assert [x.essence for x in accept_ranges(request())] == ["*/*"]


def test_wado_uri_names_it_content_type():
    r = request("contentType=image/png&accept=image/jpeg", "image/gif")
    assert requested_accept(r, "contentType") == "image/png"


def test_nothing_parsable_is_406():
    with pytest.raises(NotAcceptable):
        accept_ranges(request("", "no-slash; q=2"))
