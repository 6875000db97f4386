"""The router's STOW-RS merge: one PS3.18 10.5.3 response from the shards' responses."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from tessera.router.shards import Shard, ShardMap
from tessera.router.stow_split import Group, SplitPart, StowSplit, merge_responses
from tessera.shared.errors import ServiceUnavailable, UnsupportedMediaType
from tessera.shared.status import FailureReason
from tessera.shared.uids import read_uids

MR = MRImageStorage
BASE = "https://pacs.example.org/dicom-web"


def _part(index: int, study: str | None, sop: str | None) -> SplitPart:
    return SplitPart(index, "application/dicom", io.BytesIO(), study, MR if sop else None, sop)


def _ref(study: str, sop: str, warning: int | None = None) -> dict:
    item = {
        "00081150": {"vr": "UI", "Value": [MR]},
        "00081155": {"vr": "UI", "Value": [sop]},
        "00081190": {"vr": "UR", "Value": [f"{BASE}/studies/{study}/series/1/instances/{sop}"]},
    }
    if warning is not None:
        item["00081196"] = {"vr": "US", "Value": [warning]}
    return item


def _fail(sop: str | None, reason: int) -> dict:
    return {
        "00081150": {"vr": "UI", "Value": [MR]} if sop else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [sop]} if sop else {"vr": "UI"},
        "00081197": {"vr": "US", "Value": [reason]},
    }


def _answer(study: str | None, refs: list[dict], fails: list[dict]) -> dict:
    body: dict = {
        "00081190": {"vr": "UR", "Value": [f"{BASE}/studies/{study}"]} if study else {"vr": "UR"}
    }
    if fails:
        body["00081198"] = {"vr": "SQ", "Value": fails}
    if refs:
        body["00081199"] = {"vr": "SQ", "Value": refs}
    return body


SHARD_A, SHARD_B = Shard("a", "http://a", "http://a", "http://a"), Shard("b", "http://b", "", "")


def _sops(body: dict, tag: str) -> list[str | None]:
    return [(i["00081155"].get("Value") or [None])[0] for i in body.get(tag, {}).get("Value", [])]


def test_items_come_back_in_the_order_of_the_request_parts() -> None:
    # parts 0..4: studies S1 (a), S2 (b), S1 (a), unreadable (with a), S2 (b)
    p = [_part(0, "S1", "1"), _part(1, "S2", "2"), _part(2, "S1", "3"), _part(3, None, None)]
    p.append(_part(4, "S2", "5"))
    a = Group(SHARD_A, [p[0], p[2], p[3]])
    a.body = _answer(None, [_ref("S1", "1"), _ref("S1", "3")], [_fail(None, 0xC000)])
    b = Group(SHARD_B, [p[1], p[4]])
    b.body = _answer("S2", [_ref("S2", "2")], [_fail("5", 0x0111)])
    body, status, warnings = merge_responses([a, b])
    assert _sops(body, "00081199") == ["1", "2", "3"]
    assert _sops(body, "00081198") == [None, "5"]  # part 3, then part 4
    assert status == 202 and warnings == []
    assert body["00081190"] == {"vr": "UR"}  # two studies stored: no single study URL


def test_all_stored_in_one_study_is_200_with_its_retrieve_url() -> None:
    a = Group(SHARD_A, [_part(0, "S1", "1")], body=_answer("S1", [_ref("S1", "1")], []))
    b = Group(SHARD_B, [_part(1, "S1", "2")], body=_answer(None, [], []))
    body, status, _ = merge_responses([a, b])
    assert status == 200
    assert body["00081190"] == {"vr": "UR", "Value": [f"{BASE}/studies/S1"]}
    assert "00081198" not in body


@pytest.mark.parametrize(
    ("refs", "fails", "status"),
    [
        ([_ref("S", "1")], [], 200),
        ([_ref("S", "1", warning=0xB006)], [], 202),  # PS3.18 Table 10.5.3-1: warnings
        ([_ref("S", "1")], [_fail("2", 0xA900)], 202),
        ([], [_fail("1", 0xA900), _fail("2", 0xC000)], 409),
    ],
)
def test_status_per_table_10_5_3_1(refs: list, fails: list, status: int) -> None:
    parts = [_part(0, "S", "1"), _part(1, "S", "2")]
    group = Group(SHARD_A, parts, body=_answer("S", refs, fails))
    assert merge_responses([group])[1] == status


def test_an_unreachable_shard_fails_its_parts_and_a_damaged_body_warns() -> None:
    a = Group(SHARD_A, [_part(0, "S1", "1")], body=_answer("S1", [_ref("S1", "1")], []))
    b = Group(SHARD_B, [_part(1, "S2", "2")], error="shard b unreachable (ConnectError)")
    body, status, warnings = merge_responses([a, b], body_error="truncated")
    assert status == 202
    failed = body["00081198"]["Value"]
    assert _sops(body, "00081198") == ["2"]
    assert failed[0]["00081197"]["Value"] == [int(FailureReason.PROCESSING_FAILURE)]
    assert "unreachable" in failed[0]["00000902"]["Value"][0]
    assert any("damaged" in w for w in warnings)


async def test_a_locked_study_is_503_with_retry_after() -> None:
    shards = ShardMap({"a": SHARD_A, "b": SHARD_B}, overrides={"S1": "a"}, locked=frozenset({"S1"}))
    with pytest.raises(ServiceUnavailable) as caught:
        await StowSplit.owners(shards, {"S1", "S2"}, None)
    assert caught.value.retry_after is not None


async def test_a_study_that_a_transition_moves_is_pinned_to_its_current_shard() -> None:
    shards = ShardMap({"a": SHARD_A, "b": SHARD_B}, placement=("a",), next_placement=("a", "b"))
    studies = {f"1.2.{n}" for n in range(40)}
    pinned: dict[str, str] = {}

    async def pin(uids: list[str], shard: str) -> dict[str, str]:
        pinned.update(dict.fromkeys(uids, shard))
        return dict.fromkeys(uids, shard)

    owners = await StowSplit.owners(shards, studies, pin)
    assert set(owners.values()) == {"a"}  # every study stays where the hash puts it now
    moving = {uid for uid in studies if shards.next_owner(uid) == "b"}
    assert moving and pinned == dict.fromkeys(moving, "a")


def test_uids_are_read_from_the_header_and_garbage_gives_none() -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID = MR, "1.2.3", "1.2.4"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = MR, "1.2.3"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    out.seek(0)
    assert read_uids(out) == ("1.2.4", MR, "1.2.3")
    assert read_uids(io.BytesIO(b"not dicom at all")) == (None, None, None)


def test_only_multipart_related_of_application_dicom_is_split() -> None:
    from tessera.router.stow_split import check_content_type

    check_content_type('multipart/related; type="application/dicom"; boundary=x')
    for bad in ("", "application/dicom", 'multipart/related; type="application/dicom+json"'):
        with pytest.raises(UnsupportedMediaType):
            check_content_type(bad)
