-- The router's shard registry (issue 6, federation): which shards exist, in which state,
-- and the studies that are not (or not yet) on the shard rendezvous hashing gives them.
--
-- Routers poll it incrementally: every insert or update of a shard or an override takes a
-- new value of registry_seq (triggers below), so a router asks "what changed after the seq
-- I last saw". The triggers take a transaction-level advisory lock before they draw the
-- value, so writers commit in seq order and a reader never skips a value that commits late.

CREATE SEQUENCE registry_seq;

CREATE TABLE shard (
    name          text PRIMARY KEY,
    ingest_url    text NOT NULL,
    index_url     text NOT NULL,
    retrieve_url  text NOT NULL,
    state         text NOT NULL CHECK (state IN ('joining', 'active', 'draining', 'removed')),
    -- a draining shard stays a hash candidate until its transition commits (then false)
    in_placement  boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- A released override is a tombstone: kept so that the incremental fetch sees the release.
CREATE TABLE placement_override (
    study_instance_uid  text PRIMARY KEY,
    shard               text NOT NULL REFERENCES shard (name),
    locked              boolean NOT NULL DEFAULT false,
    released            boolean NOT NULL DEFAULT false,
    seq                 bigint NOT NULL
);
CREATE INDEX placement_override_seq ON placement_override (seq);

CREATE TABLE registry_state (
    id          int PRIMARY KEY CHECK (id = 1),
    shards_seq  bigint NOT NULL
);
INSERT INTO registry_state (id, shards_seq) VALUES (1, nextval('registry_seq'));

-- 0x7E55E4B: "tessera registry writes", taken by every writer until its commit.
CREATE FUNCTION registry_override_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(132472395);
    NEW.seq := nextval('registry_seq');
    RETURN NEW;
END
$$;
CREATE TRIGGER placement_override_seq BEFORE INSERT OR UPDATE ON placement_override
    FOR EACH ROW EXECUTE FUNCTION registry_override_seq();

CREATE FUNCTION registry_shards_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(132472395);
    UPDATE registry_state SET shards_seq = nextval('registry_seq') WHERE id = 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER shard_seq AFTER INSERT OR UPDATE OR DELETE ON shard
    FOR EACH STATEMENT EXECUTE FUNCTION registry_shards_seq();
