-- The sweeper (tessera.index.sweeper) asks, for each stored object it lists, whether a
-- row references it: an index on the key, not a scan per batch.
CREATE INDEX instance_storage_key ON instance (storage_key);

-- Where the sweeper is in its pass over the shard's objects, so that a restart resumes
-- (one row: a shard has one database).
CREATE TABLE sweep_progress (
    id           integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    phase        text NOT NULL,              -- 'temporaries' | 'instances' | 'derived' | 'done'
    after_key    text NOT NULL DEFAULT '',   -- the last key of the phase already swept
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    counts       jsonb NOT NULL DEFAULT '{}'
);
