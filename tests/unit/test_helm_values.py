"""helm/tessera/values.schema.json against the chart's example values (no helm needed).

Helm checks values against this schema on every install, upgrade, lint and template;
here the same JSON Schema (draft-07, what Helm 3 implements) is applied with
``jsonschema`` to ``values.yaml`` and every ``examples/*.yaml`` (merged over
``values.yaml``, as ``helm -f`` merges them), and bad values must be refused. The rendering
itself is checked by helm/check.sh where a helm binary exists.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CHART = Path(__file__).parents[2] / "helm" / "tessera"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of a values file over the defaults: maps merge, the rest replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def errors(values: dict[str, Any]) -> list[str]:
    return sorted(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(values)
    )


def test_schema_is_valid_draft_7_and_strict_at_the_top() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert SCHEMA["additionalProperties"] is False
    shard = SCHEMA["properties"]["shards"]["items"]
    assert shard["additionalProperties"] is False
    assert {"name", "databaseSecret", "bucket", "replicas"} <= set(shard["required"])


def test_default_values_are_valid_and_describe_two_shards() -> None:
    assert errors(DEFAULTS) == []
    assert [s["name"] for s in DEFAULTS["shards"]] == ["shard-0", "shard-1"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_values_are_valid(path: Path) -> None:
    values = merged(DEFAULTS, yaml.safe_load(path.read_text()))
    assert errors(values) == []
    # what the chart checks itself (templates/_helpers.tpl "tessera.check"): unique
    # shard names (they scope the queues, so every shard shares one Redis database)
    names = [s["name"] for s in values["shards"]]
    assert len(set(names)) == len(names)


def test_the_three_shard_example_has_three_shards() -> None:
    example = yaml.safe_load((CHART / "examples" / "three-shards.yaml").read_text())
    assert len(example["shards"]) == 3


def _shard_edit(edit: Any) -> list[str]:
    values = copy.deepcopy(DEFAULTS)
    edit(values["shards"][0])
    return errors(values)


def test_a_shard_without_a_database_secret_is_refused() -> None:
    found = _shard_edit(lambda shard: shard.pop("databaseSecret"))
    assert found == ["shards/0: 'databaseSecret' is a required property"]


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda s: s["databaseSecret"].pop("key"), "shards/0/databaseSecret"),
        (lambda s: s.update(name="Shard_0"), "shards/0/name"),  # not a DNS label
        (lambda s: s.update(bucket="x"), "shards/0/bucket"),  # too short for S3
        (lambda s: s.update(redisDatabase=1), "shards/0"),  # one database for all now
        (lambda s: s["replicas"].pop("transcode"), "shards/0/replicas"),
        (lambda s: s["replicas"].update(indexWorker=-1), "shards/0/replicas/indexWorker"),
        (lambda s: s.update(bukket="typo"), "shards/0"),  # unknown key
    ],
)
def test_bad_shard_values_are_refused(edit: Any, where: str) -> None:
    found = _shard_edit(edit)
    assert found and all(e.startswith(where + ":") for e in found), found


def test_bad_top_level_values_are_refused() -> None:
    for key, value in [
        ("redis", {"url": "redis://redis:6379/0/x"}),  # a database number, nothing more
        ("shards", []),
        ("logLevel", "verbose"),
        ("unknown", True),
    ]:
        values = copy.deepcopy(DEFAULTS)
        values[key] = value
        assert errors(values), key


def test_access_control_is_required_and_the_internal_secret_is_a_secret() -> None:
    assert "auth" in SCHEMA["required"]
    values = copy.deepcopy(DEFAULTS)
    del values["auth"]["internalSecret"]
    assert errors(values) == ["auth: 'internalSecret' is a required property"]
    values = copy.deepcopy(DEFAULTS)
    values["auth"]["issuer"] = "not a url"
    assert errors(values) and errors(values)[0].startswith("auth/issuer")
