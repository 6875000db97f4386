-- DICOMweb peers (README "Peers"): remote archives Tessera pulls from and pushes to over
-- HTTPS, and the transfer jobs, kept so that a restarted gateway resumes them.
CREATE TABLE dicomweb_peer (
    name        text PRIMARY KEY,
    url         text NOT NULL,                -- the peer's DICOMweb base URL
    kind        text NOT NULL DEFAULT 'dicomweb',  -- dicomweb, or tessera (has a change feed)
    auth        jsonb NOT NULL DEFAULT '{"type": "none"}',  -- secrets: never answered back
    ca_cert     text NOT NULL DEFAULT '',     -- PEM of the CA to verify it with ('' = system)
    verify_tls  boolean NOT NULL DEFAULT true,
    description text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE peer_job (
    id          text PRIMARY KEY,
    kind        text NOT NULL,                -- pull, push, mirror
    peer        text NOT NULL,
    request     jsonb NOT NULL,
    state       text NOT NULL,                -- queued, running, done, failed, cancelled
    progress    jsonb NOT NULL DEFAULT '{}',  -- counts, bytes, the mirror's cursor
    detail      text NOT NULL DEFAULT '',
    created_by  text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX peer_job_state ON peer_job (state) WHERE state IN ('queued', 'running');
