-- Webhooks (README "Change feed"): URLs the gateway POSTs the cluster's change feed to,
-- each with its position in the feed, and what could not be delivered (the dead letters).
CREATE TABLE webhook (
    name          text PRIMARY KEY,
    url           text NOT NULL,
    secret        text NOT NULL DEFAULT '',     -- signs each body (HMAC-SHA256); never shown
    actions       text[] NOT NULL,              -- which events: create, replace, delete, move
    max_attempts  integer NOT NULL DEFAULT 8,
    from_now      boolean NOT NULL DEFAULT true,
    cursor        text NOT NULL DEFAULT '',     -- the change feed cursor after what is done
    delivered     bigint NOT NULL DEFAULT 0,
    dead          bigint NOT NULL DEFAULT 0,
    last_error    text NOT NULL DEFAULT '',
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_dead_letter (
    id          bigserial PRIMARY KEY,
    webhook     text NOT NULL,
    events      jsonb NOT NULL,
    error       text NOT NULL,
    attempts    integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_dead_letter_webhook ON webhook_dead_letter (webhook, id);
