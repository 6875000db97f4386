-- API keys that Tessera issues itself (README "Security"): for sites without an OpenID
-- provider, and for machines. The secret is shown once, at creation; only its SHA-256
-- is kept (it is 256 random bits, so a fast hash is enough).
CREATE TABLE api_key (
    id            text PRIMARY KEY,
    secret_sha256 text NOT NULL,
    label         text NOT NULL,
    permissions   text[] NOT NULL,
    labels        text[],                      -- NULL: every study
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,                 -- NULL: never
    revoked_at    timestamptz
);
