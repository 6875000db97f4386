-- The DIMSE gateway's registry of known Application Entities (README "DIMSE"): who may
-- associate (calling AE title, from which address), what each may ask (operations),
-- which studies it sees (labels, as an API key's), and where to reach it as an SCU.
CREATE TABLE dimse_node (
    ae_title    text PRIMARY KEY,
    host        text NOT NULL DEFAULT '',     -- '' = any address; needed to be called
    port        integer,                      -- NULL = cannot be called (no move destination)
    operations  text[] NOT NULL,              -- echo, store, find, move, get
    labels      text[],                       -- NULL: every study
    tls         boolean NOT NULL DEFAULT false,
    description text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- SCU jobs (C-MOVE from a node into Tessera, C-STORE from Tessera to a node): kept so a
-- restarted gateway resumes them.
CREATE TABLE dimse_job (
    id          text PRIMARY KEY,
    kind        text NOT NULL,                -- move, store
    node        text NOT NULL,
    request     jsonb NOT NULL,
    state       text NOT NULL,                -- queued, running, done, failed
    total       integer NOT NULL DEFAULT 0,
    completed   integer NOT NULL DEFAULT 0,
    warning     integer NOT NULL DEFAULT 0,
    failed      integer NOT NULL DEFAULT 0,
    detail      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dimse_job_state ON dimse_job (state) WHERE state IN ('queued', 'running');
