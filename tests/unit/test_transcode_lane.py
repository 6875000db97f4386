"""The render lane's messages (tessera.shared.transcode.lane): versioned JSON, refused
when of another version, as every cross-process message is."""

from __future__ import annotations

import json

import pytest

from tessera.shared.messages import UnknownMessageVersion
from tessera.shared.rendering import RenderParams, Window
from tessera.shared.transcode import RenderRequest
from tessera.shared.transcode.lane import NATIVE, LaneAnswer, LaneJob


def test_a_job_and_an_answer_round_trip():
    request = RenderRequest("instances/ab/cd/x.dcm", 3, RenderParams(window=Window(40, 400)))
    job = LaneJob("tessera:s:transcode:lane:reply:1", request)
    assert LaneJob.loads(job.dumps()) == job
    jpeg = bytes(range(256)) * 64 + b"\n\r\n{}"  # any bytes, newlines included
    for answer in (
        LaneAnswer(key="rendered/x/1/y.jpg"),
        LaneAnswer(key="rendered/x/1/y.jpg", body=jpeg),
        LaneAnswer(key="rendered/x/1/y.jpg", body=b""),
        LaneAnswer(error="failed", reason="r\nsecond line"),
    ):
        assert LaneAnswer.loads(answer.dumps()) == answer


def test_another_version_is_refused():
    head, _, _ = LaneAnswer(key="k").dumps().partition(b"\n")
    for version in (1, 3):
        doc = json.loads(head) | {"v": version}
        with pytest.raises(UnknownMessageVersion):
            LaneAnswer.loads(json.dumps(doc))


def test_only_uncompressed_syntaxes_take_the_lane():
    assert "1.2.840.10008.1.2.1" in NATIVE
    assert not {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1.99"} & NATIVE
