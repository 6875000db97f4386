-- The audit trail (DICOM PS3.15 A.5 / IHE ATNA): one row per request that touched
-- patient data or changed the archive, written before the answer is sent.
CREATE TABLE audit_event (
    id                 bigserial PRIMARY KEY,
    at                 timestamptz NOT NULL,
    action             text NOT NULL,        -- query, retrieve, store, delete, admin
    outcome            smallint NOT NULL,    -- EventOutcomeIndicator: 0, 4, 8, 12
    status             smallint NOT NULL,    -- the HTTP status answered
    subject            text NOT NULL,        -- user or machine (OIDC sub, api-key:ID)
    client_id          text NOT NULL,        -- the OAuth client / the key's label
    auth_method        text NOT NULL,        -- oidc, api-key, open
    address            text NOT NULL,        -- the client's network address
    http_method        text NOT NULL,
    path               text NOT NULL,
    query              text NOT NULL,        -- ParticipantObjectQuery: the search asked
    study_instance_uid text,
    patient_id         text
);
CREATE INDEX audit_event_at ON audit_event (at);
CREATE INDEX audit_event_study ON audit_event (study_instance_uid, at);
CREATE INDEX audit_event_patient ON audit_event (patient_id, at);
CREATE INDEX audit_event_subject ON audit_event (subject, at);
