"""Character sets (PS3.5 6.1, PS3.3 C.12.1.1.2) through QIDO-RS: every file of
tests/data/corpus/Encodings (Latin-1 to -5, Cyrillic, Greek, Hebrew, Arabic, Thai,
Japanese with ISO 2022 code extensions, Korean, Chinese GB18030, UTF-8...) is parsed
as ingest parses it (``parse_instance``), indexed by the real writer, then found by its
patient name written in UTF-8 in the query, and returned as the same Unicode text in
the DICOM JSON answer (PS3.18 F.2: UTF-8).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tessera.index.writer import index_instances
from tessera.shared.levels import text
from tessera.shared.messages import IndexInstance
from tests.support.corpus import CORPUS, describe
from tests.support.qido_archive import search, serve, value

ENCODINGS = CORPUS / "Encodings"
FILES = sorted(ENCODINGS.glob("*.dcm")) + sorted(
    p for p in (ENCODINGS / "DavidClunie").iterdir() if p.name != "DICOMDIR"
)
INSTANCES: dict[str, IndexInstance] = {p.name: describe(p)[1] for p in FILES}


@pytest.fixture
async def client(database: str) -> AsyncIterator[httpx.AsyncClient]:
    conn = await asyncpg.connect(database)
    try:
        outcomes = await index_instances(conn, list(INSTANCES.values()))
    finally:
        await conn.close()
    assert {o.outcome for o in outcomes} == {"stored"}
    async with serve(database) as c:
        yield c


def _name(inst: IndexInstance) -> str:
    """The patient name as the query writes it: groups joined by '=' (PS3.5 6.2.1)."""
    return text(inst.metadata, "00100010")


@pytest.mark.parametrize("file", sorted(INSTANCES))
async def test_found_by_its_name_in_utf8_and_returned_unchanged(client, file):
    inst = INSTANCES[file]
    results = await search(client, "/studies", PatientName=_name(inst), includefield="00080005")
    (result,) = [r for r in results if value(r, "0020000D") == inst.study_instance_uid]
    assert len(results) == 1, [value(r, "00100010") for r in results]
    assert result["00100010"] == inst.metadata["00100010"]  # the same Unicode text
    assert result["00100020"] == inst.metadata["00100020"]
    assert result["00080005"] == inst.metadata["00080005"]


@pytest.mark.parametrize(
    ("params", "patient_ids"),
    [
        # case-insensitive PN (our C.2.2.2.1 conformance) beyond ASCII
        ({"PatientName": "люкceмбypг"}, ["SCSRUSS"]),
        ({"PatientName": "ΔΙΟΝΥΣΙΟ*"}, ["SCSGREEK"]),
        ({"PatientName": "BUC^JÉRÔME"}, ["SCSFREN"]),
        ({"PatientName": "test-ÉÜÄÖ"}, ["latin2"]),
        # one component group: the ideographic or phonetic name alone (PS3.5 6.2.1)
        ({"PatientName": "洪^吉洞"}, ["I2EXAMPLE"]),
        ({"PatientName": "홍^길동"}, ["I2EXAMPLE"]),
        ({"PatientName": "山田^太郎"}, ["H31EXAMPLE", "H32EXAMPLE"]),
        ({"PatientName": "王^小*"}, ["X1EXAMPLE", "X2EXAMPLE"]),
        ({"PatientName": "שרון^דבורה"}, ["SCSHBRW"]),
        ({"PatientName": "قباني^لنزار"}, ["SCSARAB"]),
        ({"PatientName": "*๛"}, ["tis-620"]),
        # without fuzzy matching, accents count
        ({"PatientName": "Buc^Jerome"}, []),
        # fuzzymatching=true (PS3.18 8.3.4.2): accents folded, words in any order, prefixes
        ({"PatientName": "jerome buc", "fuzzymatching": "true"}, ["SCSFREN"]),
        ({"PatientName": "rudi aneas", "fuzzymatching": "true"}, ["SCSGERM"]),
        ({"PatientName": "euaok", "fuzzymatching": "true"}, ["latin4"]),  # Test-éüäöķ
        ({"PatientName": "ΔΙΟΝΥΣ", "fuzzymatching": "true"}, ["SCSGREEK"]),
        ({"PatientName": "*jérome*", "fuzzymatching": "true"}, ["SCSFREN"]),
        # NFKC: a full-width query finds the half-width katakana of SCSH32
        ({"PatientName": "タロウ", "fuzzymatching": "true"}, ["H32EXAMPLE"]),
        ({"PatientName": "たろう", "fuzzymatching": "true"}, ["H31EXAMPLE", "H32EXAMPLE"]),
    ],
)
async def test_matching_beyond_ascii(client, params, patient_ids):
    results = await search(client, "/studies", **params)
    assert sorted(value(r, "00100020") for r in results) == sorted(patient_ids)


def test_the_corpus_covers_the_character_sets():
    seen = {v for inst in INSTANCES.values() for v in inst.metadata["00080005"].get("Value", [])}
    latin = {f"ISO_IR {n}" for n in (100, 101, 109, 110, 148)}
    others = {"ISO_IR 144", "ISO_IR 126", "ISO_IR 138", "ISO_IR 127", "ISO_IR 166", "ISO_IR 13"}
    extensions = {"ISO 2022 IR 87", "ISO 2022 IR 149", "GB18030", "ISO_IR 192"}
    assert latin | others | extensions <= seen
    assert Path(ENCODINGS / "DavidClunie" / "DICOMDIR").exists()  # not an instance: left out
