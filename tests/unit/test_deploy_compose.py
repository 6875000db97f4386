"""deploy/compose.yaml, checked without a Docker engine: what `docker compose up` would
need to be right and that can be read from the file.

Every Tessera service runs a command that is a real ``python -m`` module, sets only
``TESSERA_*`` variables that are Settings fields, has a health check on its own port's
``/readyz``; ``depends_on`` names existing services with a condition they can meet; each
shard has its own database and bucket, all share one Redis database; the router's shard
list points at the shards' services. The probe script the health checks run is exercised on a real
socket.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tessera.router.registry.migrate import parse_shard
from tessera.shared.settings import Settings

DEPLOY = Path(__file__).parents[2] / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
FIELDS = {f.name for f in dataclasses.fields(Settings)}
DEFAULTS = Settings()
# the port setting each HTTP role listens on (a worker's: its health server)
ROLE_PORT = {
    "tessera.router": DEFAULTS.router_port,
    "tessera.ingest": DEFAULTS.ingest_port,
    "tessera.index": DEFAULTS.index_port,
    "tessera.retrieve": DEFAULTS.retrieve_port,
    "tessera.index.worker": DEFAULTS.index_worker_port,
    "tessera.transcode": DEFAULTS.transcode_port,
    "tessera.dimse": DEFAULTS.dimse_http_port,
    "tessera.index.sweeper": DEFAULTS.sweeper_port,
}
SHARDS = ("shard-0", "shard-1")
SHARD_ROLES = {"ingest", "index", "index-worker", "retrieve", "transcode", "sweeper", "migrate"}


def _tessera_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in SERVICES.items() if s.get("image") == "tessera:dev"}


def _one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def test_the_image_is_built_from_the_repository_with_the_deploy_dockerfile() -> None:
    for name, service in _tessera_services().items():
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m"]' in dockerfile
    assert re.search(r"^USER 10001", dockerfile, re.MULTILINE)  # not root
    assert "deploy/probe.py /usr/local/bin/tessera-probe" in dockerfile


@pytest.mark.parametrize("name", sorted(_tessera_services()))
def test_command_is_a_runnable_tessera_module(name: str) -> None:
    module = SERVICES[name]["command"][0]
    assert module.startswith("tessera."), module
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{name}: no module {module}"
    if spec.submodule_search_locations:  # a package runs its __main__
        assert importlib.util.find_spec(module + ".__main__") is not None, module
    else:
        assert 'if __name__ == "__main__":' in Path(spec.origin).read_text(), module


@pytest.mark.parametrize("name", sorted(_tessera_services()))
def test_every_tessera_variable_is_a_settings_field(name: str) -> None:
    env = SERVICES[name]["environment"]
    for variable in env:
        assert variable.startswith("TESSERA_"), (name, variable)
        assert variable[len("TESSERA_") :].lower() in FIELDS, (name, variable)
    # and each value parses as its field's type (defaults substituted)
    values = {k: re.sub(r"\$\{[^:}]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}
    Settings.from_env(values)


@pytest.mark.parametrize("name", sorted(n for n, s in SERVICES.items() if not _one_shot(s)))
def test_every_long_running_service_has_a_health_check(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] == "CMD" and len(check["test"]) > 1
    for key in ("interval", "timeout", "retries"):
        assert key in check, (name, key)
    if SERVICES[name].get("image") != "tessera:dev":
        return
    module = SERVICES[name]["command"][0]
    assert check["test"][1] == "tessera-probe"
    url = urlsplit(check["test"][2])
    if module in ROLE_PORT:  # probed on its own port's readiness endpoint
        assert (url.hostname, url.port, url.path) == ("127.0.0.1", ROLE_PORT[module], "/readyz")
    else:  # the rebalance worker: its broker
        assert module == "tessera.router.rebalance" and url.scheme == "redis"
        assert check["test"][2] == SERVICES[name]["environment"]["TESSERA_ROUTER_REDIS_URL"]


def test_depends_on_names_services_with_conditions_they_can_meet() -> None:
    for name, service in SERVICES.items():
        for dep, how in (service.get("depends_on") or {}).items():
            assert dep in SERVICES, (name, dep)
            if how["condition"] == "service_completed_successfully":
                assert _one_shot(SERVICES[dep]), (name, dep)
            else:
                assert how["condition"] == "service_healthy", (name, dep)
                assert "healthcheck" in SERVICES[dep], (name, dep)


def test_every_shard_has_its_services_database_and_bucket_and_shares_one_redis() -> None:
    init_sql = (DEPLOY / "postgres" / "init.sql").read_text()
    buckets = " ".join(SERVICES["buckets"]["command"])
    redis_urls: set[str] = set()
    for shard in SHARDS:
        roles = {n[len(shard) + 1 :] for n in SERVICES if n.startswith(shard + "-")}
        assert roles == SHARD_ROLES, shard
        envs = [SERVICES[f"{shard}-{role}"]["environment"] for role in sorted(SHARD_ROLES)]
        env = envs[0]
        assert all(e == env for e in envs), f"{shard}: services disagree on settings"
        assert env["TESSERA_SHARD"] == shard
        database = urlsplit(env["TESSERA_DATABASE_URL"]).path.lstrip("/")
        assert f"CREATE DATABASE {database};" in init_sql
        bucket = urlsplit(env["TESSERA_STORAGE_URL"]).netloc
        assert f"tessera/{bucket}" in buckets
        redis_urls.add(env["TESSERA_REDIS_URL"])
    router_env = SERVICES["router"]["environment"]
    # queues and locks are named by shard (tessera.shared.queue, tessera.shared.transcode)
    assert redis_urls == {router_env["TESSERA_ROUTER_REDIS_URL"]}
    router_db = urlsplit(router_env["TESSERA_ROUTER_DATABASE_URL"]).path.lstrip("/")
    assert f"CREATE DATABASE {router_db};" in init_sql


def test_the_registry_lists_each_shard_with_its_own_services() -> None:
    command = SERVICES["router-migrate"]["command"]
    assert command[0] == "tessera.router.registry.migrate"
    shards = [parse_shard(arg) for flag, arg in zip(command[1::2], command[2::2], strict=True)]
    assert all(flag == "--shard" for flag in command[1::2])
    assert [s[0] for s in shards] == list(SHARDS)
    for name, *urls in shards:
        for role, url in zip(("ingest", "index", "retrieve"), urls, strict=True):
            parts = urlsplit(url)
            assert parts.hostname == f"{name}-{role}" and parts.hostname in SERVICES
            assert parts.port == ROLE_PORT[f"tessera.{role}"]


# --- the probe the health checks run --------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/readyz" else 503)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _probe_main() -> Any:
    spec = importlib.util.spec_from_file_location("tessera_probe", DEPLOY / "probe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_probe_passes_on_2xx_and_fails_otherwise(http_server: str) -> None:
    main = _probe_main()
    assert main([http_server + "/readyz"]) == 0
    assert main([http_server + "/other"]) == 1  # 503
    assert main([http_server + "/readyz", http_server + "/other"]) == 1
    assert main(["http://127.0.0.1:9/readyz"]) == 1  # nothing listens
    assert main([]) == 2
