"""Typed settings, read once from the environment at process start and passed in.

Handlers never read the environment: a service's ``__main__`` calls
:func:`Settings.from_env` and hands the frozen object to its app factory.

Every variable is ``TESSERA_*``; the defaults are the single-machine ones that
``make run`` uses, so a bare ``python -m tessera.<service>`` finds its neighbours.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True)
class Settings:
    # identity of this shard (queue and key names are scoped by it)
    shard: str = "shard-0"
    # PostgreSQL of this shard (index, precomputed metadata, change feed)
    database_url: str = "postgresql://tessera@127.0.0.1:55432/tessera"
    # Redis: index job queue, replies, Celery broker/backend for transcode
    redis_url: str = "redis://127.0.0.1:56379/0"
    # object storage: ``file:///abs/folder`` or ``s3://bucket[/prefix]``
    storage_url: str = "file:///var/lib/tessera/objects"
    # S3 endpoint for s3:// storage (MinIO, moto, Ceph...); empty = AWS default
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    # STOW-RS limits (PS3.18 10.5): parts above spool_threshold go to a temp file
    spool_threshold: int = 4 * MIB
    max_part_size: int = 4 * GIB
    max_request_size: int = 16 * GIB
    spool_dir: str = ""
    # seconds ingest waits for the index to commit before reporting a failure
    index_timeout: float = 30.0
    # index worker batching
    index_batch_size: int = 64
    # after a read that found fewer jobs than a batch, the index worker waits this many
    # seconds for more before it commits: jobs of concurrent STOW requests share one
    # transaction (one commit, one WAL flush, one count refresh) at the cost of this delay
    index_linger: float = 0.002
    # a job held by a dead consumer for this long is claimed by another (seconds)
    index_claim_idle: float = 15.0
    # consumer name of an index worker in the consumer group; stable across restarts
    index_consumer: str = "index-1"
    # what a STOW of a different object under an existing SOPInstanceUID does:
    # "reject" (failure 0x0111, the stored one is kept) or "replace"
    duplicate_policy: str = "reject"
    # ports and hosts of the services (single machine)
    host: str = "127.0.0.1"
    router_port: int = 8042
    ingest_port: int = 8101
    index_port: int = 8102
    retrieve_port: int = 8103
    # processes serving the same port (shared/serve.py): the router, ingest and retrieve
    # are stateless between requests and scale with the cores
    router_workers: int = 1
    ingest_workers: int = 1
    retrieve_workers: int = 1
    # /healthz, /readyz and /metrics of the two workers that serve no HTTP otherwise
    index_worker_port: int = 8104
    transcode_port: int = 8105
    sweeper_port: int = 8107
    # the sweeper (tessera.index.sweeper): an object no row references is removed once
    # it is older than sweep_grace seconds (longer than any STOW may wait for its index
    # commit), a pass over the shard's objects every sweep_interval seconds
    sweep_grace: float = 24 * 3600.0
    sweep_interval: float = 3600.0
    # limits of every HTTP server (router, shard services, health ports): the request
    # line and headers together in bytes, the number of header fields, seconds a
    # connection may take to send a request's head (idle ones included), and seconds an
    # idle keep-alive connection is kept after a response
    http_max_head_bytes: int = 64 * KIB
    http_max_headers: int = 100
    http_head_timeout: float = 30.0
    http_keep_alive: float = 30.0
    # where the router finds a shard's services (single-shard mode)
    ingest_url: str = "http://127.0.0.1:8101"
    index_url: str = "http://127.0.0.1:8102"
    retrieve_url: str = "http://127.0.0.1:8103"
    # the router's shard registry (PostgreSQL): empty = the one shard of the *_url above
    router_database_url: str = ""
    # seconds between a router's polls of the registry for shard and placement changes
    registry_poll: float = 1.0
    # seconds the router waits for each shard of a QIDO fan-out before answering without it
    router_shard_timeout: float = 5.0
    # rebalance jobs (moving studies between shards): the Celery broker of the rebalance
    # worker (the router's Redis), studies moved at once, and instances per STOW-RS
    # request (count and bytes) when copying a study to its new shard
    router_redis_url: str = "redis://127.0.0.1:56379/2"
    rebalance_concurrency: int = 8
    rebalance_batch_size: int = 32
    rebalance_batch_bytes: int = 64 * MIB
    # studies (and bytes copied) locked and released together: the 2 x registry_poll
    # waits after the lock and after the release are paid once per such group
    rebalance_switch_studies: int = 100
    rebalance_switch_bytes: int = 4 * GIB
    # path prefix of the DICOMweb API on the router
    dicomweb_prefix: str = "/dicom-web"
    # CORS: comma-separated allowed origins ("*" for any)
    cors_origins: tuple[str, ...] = field(default_factory=lambda: ("*",))
    # the OHIF viewer the router serves at /viewer/: a built OHIF ``dist`` folder (what
    # `make viewer` fetches); empty = not served (/viewer/ says how to get it)
    viewer_dir: str = ""
    # the DICOMweb root the viewer's generated app-config.js points at: empty = this
    # router's own prefix, relative to the page's origin; an absolute URL = another origin
    viewer_dicomweb_url: str = ""
    # how OHIF draws series thumbnails: "thumbnailDirect" (<img src=".../thumbnail">,
    # rendered by transcode; an <img> sends no Authorization header) or "wadors" (OHIF
    # fetches and decodes a whole frame itself; works with token auth)
    viewer_thumbnail_rendering: str = "thumbnailDirect"
    # OHIF's login (OpenID Connect, authorization code + PKCE): the provider and the
    # viewer's public client there; empty = no login in the viewer. With it, thumbnails
    # are fetched with the token ("wadors") whatever viewer_thumbnail_rendering says
    viewer_oidc_authority: str = ""
    viewer_oidc_client_id: str = ""
    viewer_oidc_scope: str = "openid profile"
    # QIDO-RS: largest page the server returns (PS3.18 8.3.4.4 / 10.6.3.2 Warning)
    qido_max_limit: int = 1000
    # QIDO-RS: extra searchable attributes, ``level:keyword-or-tag`` (``study:InstitutionName,
    # series:ProtocolName,instance:AcquisitionDateTime``): kept in that level's attrs, and
    # indexed by ``python -m tessera.index.search_indexes`` (see tessera.shared.levels.Layout)
    qido_extra_attributes: tuple[str, ...] = ()
    # transcode: seconds retrieve waits for a Celery task
    transcode_timeout: float = 60.0
    # first renderings of uncompressed images through the render lane, not Celery
    # (tessera.shared.transcode.lane): both retrieve and the transcode workers read it
    transcode_lane: bool = True
    log_level: str = "info"

    # --- security (README "Security") ------------------------------------------------------
    # the secret the router signs its requests to the shard services with (>= 32 bytes,
    # the same for every service of a deployment); empty = shard services check nothing,
    # which they allow on loopback only
    internal_secret: str = ""
    # "off": the operator's acknowledgement that the archive answers without
    # authentication on a non-loopback address (else such a service refuses to start)
    auth: str = ""
    # OpenID Connect: the issuer whose bearer tokens the router accepts (its discovery
    # document and JWKS are fetched from it); empty = no OIDC
    auth_issuer: str = ""
    # the `aud` a token must carry
    auth_audience: str = "tessera"
    # asymmetric JWS algorithms accepted (never "none", never HMAC with a public key)
    auth_algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256", "EdDSA")
    # seconds of clock skew allowed on exp / nbf / iat
    auth_leeway: float = 30.0
    # seconds between refreshes of the issuer's JWKS (an unknown `kid` refreshes sooner)
    auth_jwks_refresh: float = 300.0
    # claims whose values grant permissions: space-separated strings or lists; a dotted
    # name walks into objects (Keycloak's realm_access.roles)
    auth_permission_claims: tuple[str, ...] = ("scope", "realm_access.roles", "groups")
    # a claim value grants permission P when it is this prefix + P ("tessera:read")
    auth_permission_prefix: str = "tessera:"
    # the claim listing the study labels a token is limited to (absent: every study)
    auth_labels_claim: str = "tessera_labels"
    # seconds an API key's row (and its revocation) is cached by a router
    auth_cache_seconds: float = 5.0
    # API keys and the audit trail: the router's PostgreSQL (empty = router_database_url)
    auth_database_url: str = ""
    # audit events of the same caller, action, study and query within this many seconds
    # are one event (a viewer's hundreds of frame requests); 0 = one event per request
    audit_coalesce_seconds: float = 60.0
    # audit events also to an audit repository as RFC 5424 syslog (IHE ATNA):
    # udp://host:514, tcp://host:601 or tls://host:6514; empty = the trail only
    audit_syslog_url: str = ""
    # a bearer token that /metrics then requires (empty = /metrics is open)
    metrics_token: str = ""
    # HTTPS at the router: PEM certificate chain and private key (empty = plain HTTP)
    tls_cert: str = ""
    tls_key: str = ""

    # --- DIMSE gateway (README "DIMSE") -------------------------------------------------------
    # Tessera's AE title: the Called AE Title every association must name (PS3.8 7.1.1.4)
    dimse_ae_title: str = "TESSERA"
    # the DICOM port (plain TCP), and the TLS one (PS3.15 B.1; 0 = none, needs cert + key)
    dimse_port: int = 11112
    dimse_tls_port: int = 0
    dimse_tls_cert: str = ""
    dimse_tls_key: str = ""
    # CA bundle (PEM) a calling AE's client certificate must chain to on the TLS port;
    # empty = no client certificate asked. Also what verifies a node marked "tls" when
    # the gateway calls it
    dimse_tls_ca: str = ""
    # the gateway's HTTP port: /healthz, /readyz, /metrics, and the nodes / SCU API the
    # router forwards /admin/dicom-nodes and /admin/dimse-jobs to
    dimse_http_port: int = 8106
    # where the router finds the gateway (empty: no DIMSE routes on the router)
    dimse_url: str = ""
    # where the gateway finds the archive: the router (empty = http://host:router_port),
    # and a CA bundle to verify it by when it is HTTPS (empty = the system's)
    dimse_router_url: str = ""
    dimse_router_ca: str = ""
    # the gateway's PostgreSQL (AE registry, jobs): empty = auth_database_url, else
    # router_database_url
    dimse_database_url: str = ""
    # associations served at once (more are rejected: local limit exceeded, PS3.8 9.3.4)
    dimse_max_associations: int = 32
    # largest P-DATA PDU the gateway receives (bytes; 0 = no limit) and seconds of
    # silence (ACSE, DIMSE, network) after which an association is aborted
    dimse_max_pdu: int = 0
    dimse_timeout: float = 60.0
    # seconds without progress after which a running SCU job is another gateway's to take
    # up (its gateway died): a gateway that starts resumes such jobs
    dimse_job_stale: float = 60.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get("TESSERA_" + f.name.upper())
            if raw is None:
                continue
            default = getattr(cls(), f.name)
            values[f.name] = _coerce(raw, default)
        values.update(overrides)
        return cls(**values)

    def env(self) -> dict[str, str]:
        """The settings as ``TESSERA_*`` variables, to start a child process with."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            out["TESSERA_" + f.name.upper()] = str(value)
        return out


def _coerce(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, tuple):
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return raw
