-- Tessera shard index, schema 1.
-- One row per patient / study / series / instance, plus the change feed.
-- Query columns hold attribute values as DICOM strings (dates 'YYYYMMDD', PN as the
-- DICOM JSON Alphabetic/Ideographic/Phonetic groups joined by '='), so matching
-- follows PS3.4 C.2.2.2 on the stored representation.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- PatientID is not unique across issuers or sites: a patient row is one
-- (PatientID, IssuerOfPatientID, PatientName, PatientBirthDate) combination, so two
-- people who share an ID are never merged.
CREATE TABLE patient (
    pk                    bigserial PRIMARY KEY,
    patient_key           text NOT NULL UNIQUE,
    patient_id            text NOT NULL DEFAULT '',
    issuer_of_patient_id  text NOT NULL DEFAULT '',
    patient_name          text NOT NULL DEFAULT '',
    patient_birth_date    text NOT NULL DEFAULT '',
    patient_sex           text NOT NULL DEFAULT '',
    attrs                 jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE study (
    pk                        bigserial PRIMARY KEY,
    study_instance_uid        text NOT NULL UNIQUE,
    patient_pk                bigint NOT NULL REFERENCES patient(pk),
    study_date                text NOT NULL DEFAULT '',
    study_time                text NOT NULL DEFAULT '',
    accession_number          text NOT NULL DEFAULT '',
    study_id                  text NOT NULL DEFAULT '',
    study_description         text NOT NULL DEFAULT '',
    referring_physician_name  text NOT NULL DEFAULT '',
    -- computed attributes (PS3.18 Table 10.6.3-3), kept up to date by the index writer
    modalities_in_study       text[] NOT NULL DEFAULT '{}',
    sop_classes_in_study      text[] NOT NULL DEFAULT '{}',
    number_of_series          integer NOT NULL DEFAULT 0,
    number_of_instances       integer NOT NULL DEFAULT 0,
    -- study-level attributes as DICOM JSON (patient + study modules)
    attrs                     jsonb NOT NULL DEFAULT '{}',
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX study_patient ON study (patient_pk);
CREATE INDEX study_date_idx ON study (study_date, study_time);
CREATE INDEX study_accession ON study (accession_number);

CREATE TABLE series (
    pk                          bigserial PRIMARY KEY,
    series_instance_uid         text NOT NULL UNIQUE,
    study_pk                    bigint NOT NULL REFERENCES study(pk),
    modality                    text NOT NULL DEFAULT '',
    series_number               text NOT NULL DEFAULT '',
    series_description          text NOT NULL DEFAULT '',
    performed_procedure_step_start_date text NOT NULL DEFAULT '',
    performed_procedure_step_start_time text NOT NULL DEFAULT '',
    number_of_instances         integer NOT NULL DEFAULT 0,
    attrs                       jsonb NOT NULL DEFAULT '{}',
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX series_study ON series (study_pk);
CREATE INDEX series_modality ON series (modality);

CREATE TABLE instance (
    pk                    bigserial PRIMARY KEY,
    sop_instance_uid      text NOT NULL UNIQUE,
    series_pk             bigint NOT NULL REFERENCES series(pk),
    sop_class_uid         text NOT NULL,
    instance_number       text NOT NULL DEFAULT '',
    -- integer form of InstanceNumber for ordering ('' sorts last)
    instance_number_int   integer,
    transfer_syntax_uid   text NOT NULL,
    rows                  integer,
    columns               integer,
    number_of_frames      integer,
    -- the stored object: immutable content-addressed key, size and SHA-256
    storage_key           text NOT NULL,
    size                  bigint NOT NULL,
    sha256                text NOT NULL,
    -- Pixel Data (7FE0,0010) value offset/length in the object, for frame retrieval
    pixel_data            jsonb,
    -- the instance's DICOM JSON (PS3.18 F.2), BulkDataURIs root-relative ("/studies/...")
    metadata              text NOT NULL,
    attrs                 jsonb NOT NULL DEFAULT '{}',
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instance_series ON instance (series_pk, instance_number_int, sop_instance_uid);
CREATE INDEX instance_sop_class ON instance (sop_class_uid);

-- What changed, in commit order: a peer or a cache follows it by sequence number.
CREATE TABLE change_feed (
    seq                   bigserial PRIMARY KEY,
    action                text NOT NULL,        -- 'create' | 'replace' | 'delete'
    study_instance_uid    text NOT NULL,
    series_instance_uid   text NOT NULL,
    sop_instance_uid      text NOT NULL,
    at                    timestamptz NOT NULL DEFAULT now()
);
