-- Rebalance jobs (issue 6): adding a shard or draining one moves the studies whose
-- placement changes. A job's whole state is in these rows, so a worker that crashed
-- resumes where it stopped (tessera.router.rebalance).

CREATE TABLE rebalance_job (
    id               bigserial PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('add', 'drain')),
    shard            text NOT NULL REFERENCES shard (name),
    -- pending: shard registered / set draining; listing: studies being listed and
    -- pinned; moving: transition committed, studies being copied; then done or failed
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'listing', 'moving', 'done', 'failed')),
    -- the hash candidates before the transition and once it commits (where each study
    -- was and where it ends up), kept so that a resumed job decides as the first run did
    old_placement    text[],
    final_placement  text[],
    total_studies    integer NOT NULL DEFAULT 0,
    done_studies     integer NOT NULL DEFAULT 0,
    failed_studies   integer NOT NULL DEFAULT 0,
    total_instances  bigint NOT NULL DEFAULT 0,
    moved_instances  bigint NOT NULL DEFAULT 0,
    moved_bytes      bigint NOT NULL DEFAULT 0,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    moving_at        timestamptz,  -- when copying began (the rate counts from here)
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
-- one transition at a time: a second add or drain waits for the running one to end
CREATE UNIQUE INDEX rebalance_job_one_running ON rebalance_job ((true))
    WHERE state NOT IN ('done', 'failed');

CREATE TABLE rebalance_study (
    job_id              bigint NOT NULL REFERENCES rebalance_job (id),
    study_instance_uid  text NOT NULL,
    source              text NOT NULL,
    target              text NOT NULL,
    -- pending -> copied (every instance on target, checksums equal) -> switched (override
    -- released: the target owns it) -> done (deleted at source); or failed (kept at source)
    state               text NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'copied', 'switched', 'done', 'failed')),
    instances           integer NOT NULL DEFAULT 0,  -- listed (estimate until done)
    bytes               bigint NOT NULL DEFAULT 0,
    attempts            integer NOT NULL DEFAULT 0,
    error               text,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, study_instance_uid)
);
CREATE INDEX rebalance_study_todo ON rebalance_study (job_id)
    WHERE state NOT IN ('done', 'failed');
