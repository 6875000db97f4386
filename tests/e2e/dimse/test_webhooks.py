"""Webhooks (issue 13; README "Change feed"): the cluster's change feed POSTed to a real
HTTP receiver started here, signed with HMAC-SHA256, retried while the receiver fails,
kept as a dead letter when it never takes a batch, and sent again on request."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.support.dicomgen import make_instance, multipart
from tests.support.waiting import eventually

SECRET = "webhook-secret-of-the-test"


class Receiver:
    """An HTTP server on loopback answering ``fail`` requests with 500, then 200."""

    def __init__(self) -> None:
        self.fail = 0
        self.always_fail = False
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.attempts += 1
                if receiver.always_fail or receiver.fail > 0:
                    receiver.fail -= 1
                    self.send_response(500)
                else:
                    receiver.received.append(
                        ({k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [e for _, body in self.received for e in json.loads(body)["events"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def store(admin: httpx.Client, files: list[bytes]) -> None:
    body, ctype = multipart(files)
    r = admin.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text


def test_events_are_delivered_signed_and_retried(admin: httpx.Client, receiver: Receiver) -> None:
    receiver.fail = 2  # the first two attempts fail: retried with back-off
    r = admin.put("/admin/webhooks/hook-a", json={"url": receiver.url, "secret": SECRET,
                  "actions": ["create", "delete"], "maxAttempts": 6})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["secret"] == "***"
    # the webhook starts at the feed's end: once it has taken its position
    eventually(lambda: admin.get("/admin/webhooks/hook-a").json()["following"])
    study, series = generate_uid(), generate_uid()
    files = [make_instance(study, series, generate_uid()) for _ in range(2)]
    store(admin, files)
    sops = {pydicom.dcmread(io.BytesIO(f)).SOPInstanceUID for f in files}
    eventually(lambda: {e["instance"] for e in receiver.events() if e["study"] == study} == sops)
    assert receiver.attempts >= 3
    for headers, body in receiver.received:  # each body signed with the secret
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-tessera-signature"] == expected
        assert headers["content-type"] == "application/json"
    gone = sorted(sops)[0]
    assert (
        admin.delete(f"/dicom-web/studies/{study}/series/{series}/instances/{gone}").status_code
        == 204
    )
    eventually(
        lambda: ("delete", gone) in {(e["action"], e["instance"]) for e in receiver.events()}
    )
    state = admin.get("/admin/webhooks/hook-a").json()
    assert state["delivered"] >= 3 and state["deadLetters"] == 0 and state["lastError"] == ""
    assert admin.delete("/admin/webhooks/hook-a").status_code == 204


def test_an_undeliverable_batch_becomes_a_dead_letter_and_is_sent_again(
    admin: httpx.Client, receiver: Receiver
) -> None:
    receiver.always_fail = True
    r = admin.put("/admin/webhooks/hook-b", json={"url": receiver.url, "maxAttempts": 2})
    assert r.status_code == 201, r.text
    eventually(lambda: admin.get("/admin/webhooks/hook-b").json()["following"])
    study = generate_uid()
    store(admin, [make_instance(study, generate_uid(), generate_uid())])
    eventually(lambda: admin.get("/admin/webhooks/hook-b").json()["deadLetters"] == 1)
    letters = admin.get("/admin/webhooks/hook-b/dead-letters").json()["deadLetters"]
    assert len(letters) == 1 and letters[0]["error"] == "HTTP 500" and letters[0]["attempts"] == 2
    assert study in {e["study"] for e in letters[0]["events"]}
    # still failing: 502, kept; then the receiver is fixed: delivered and gone
    assert (
        admin.post(f"/admin/webhooks/hook-b/dead-letters/{letters[0]['id']}/retry").status_code
        == 502
    )
    receiver.always_fail = False
    r = admin.post(f"/admin/webhooks/hook-b/dead-letters/{letters[0]['id']}/retry")
    assert r.status_code == 200 and r.json()["delivered"] is True
    assert study in {e["study"] for e in receiver.events()}
    assert admin.get("/admin/webhooks/hook-b/dead-letters").json()["deadLetters"] == []
    # the webhook went on after the dead letter: later events reach the receiver
    later = generate_uid()
    store(admin, [make_instance(later, generate_uid(), generate_uid())])
    eventually(lambda: later in {e["study"] for e in receiver.events()})
    assert admin.delete("/admin/webhooks/hook-b").status_code == 204
    bad = admin.put("/admin/webhooks/hook-c", json={"url": "ftp://x"})
    assert bad.status_code == 400
