-- Tessera shard index, schema 3: what QIDO-RS needs to stay fast at millions of instances.
-- (0002 is left to the retrieve work; numbers only order the files.)
--
-- Chosen for OHIF's queries (see bench/qido_scale.py and bench/README.md for the plans
-- EXPLAIN ANALYZE shows at 1,000,000 instances):
--   study list, newest first       btree study_order, read in index order
--   PatientName=*smi*               trigram GIN on patient.patient_name (ILIKE '%smi%')
--   fuzzymatching=true              trigram GIN on patient_name_folded (stored tessera_fold)
--   PatientID / AccessionNumber     btree for equality, trigram GIN for *x*
--   StudyDescription=*x*            trigram GIN
--   ModalitiesInStudy=MR            GIN on the array (modalities_in_study @> ARRAY['MR'])
--   StudyDate(+StudyTime) ranges    study_order (row comparison on date, time)

CREATE EXTENSION IF NOT EXISTS unaccent;

-- The functions below name every function they call with its schema (found here), so
-- that expression indexes over them work whatever the search_path of the session that
-- builds or restores them.
DO $migration$
DECLARE
    ext text := (SELECT extnamespace::regnamespace::text FROM pg_extension
                  WHERE extname = 'unaccent');
    own text := quote_ident(current_schema());
BEGIN
    -- Fuzzy PN matching (PS3.18 8.3.4.2) compares folded forms: NFKC (half-width kana
    -- and compatibility forms to their usual form), accents and ligatures removed by
    -- unaccent (é -> e, ß -> ss, Ł -> L, Ά -> Α), lower case. unaccent() is STABLE
    -- because its dictionary could change; naming the dictionary makes the call
    -- immutable in practice, which is what an expression index needs.
    EXECUTE format($f$
        CREATE FUNCTION %1$s.tessera_fold(value text) RETURNS text
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
            AS $b$ SELECT pg_catalog.lower(%2$s.unaccent(%3$L::pg_catalog.regdictionary,
                                                        pg_catalog.normalize(value, 'NFKC'))) $b$
    $f$, own, ext, ext || '.unaccent');

    -- The values of one attribute of a DICOM JSON object as text: numbers and strings
    -- as written, a PN as its component groups joined by '=' (as patient.patient_name).
    EXECUTE format($f$
        CREATE FUNCTION %1$s.tessera_attr_values(attrs jsonb, tag text) RETURNS text[]
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            AS $b$
                SELECT coalesce(array_agg(
                           CASE WHEN jsonb_typeof(v) = 'object'
                                THEN rtrim(concat_ws('=', coalesce(v ->> 'Alphabetic', ''),
                                           coalesce(v ->> 'Ideographic', ''),
                                           coalesce(v ->> 'Phonetic', '')), '=')
                                ELSE v #>> '{}' END), '{}')
                  FROM jsonb_array_elements(
                           CASE WHEN jsonb_typeof(attrs -> tag -> 'Value') = 'array'
                                THEN attrs -> tag -> 'Value' ELSE '[]' END) AS e(v)
            $b$
    $f$, own);

    -- The elements of a DICOM JSON object whose tags are in tags: what a search returns.
    EXECUTE format($f$
        CREATE FUNCTION %1$s.tessera_pick(attrs jsonb, tags text[]) RETURNS jsonb
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            AS $b$
                SELECT coalesce(jsonb_object_agg(t, attrs -> t), '{}'::jsonb)
                  FROM unnest(tags) AS t WHERE attrs ? t
            $b$
    $f$, own);

    -- The same values joined by '\' (the DICOM string form): what trigram indexes cover.
    EXECUTE format($f$
        CREATE FUNCTION %1$s.tessera_attr_text(attrs jsonb, tag text) RETURNS text
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
            AS $b$ SELECT array_to_string(%1$s.tessera_attr_values(attrs, tag), '\') $b$
    $f$, own);
END
$migration$;

-- A DT value (PS3.5 6.2) in UTC as 'YYYYMMDDHHMMSS.FFFFFF': its own offset, else
-- fallback ('+HHMM' / '-HHMM'), else as written. Missing components count from the
-- start (2024 -> 20240101000000.000000). NULL if it is not a DT value.
CREATE FUNCTION tessera_dt_utc(value text, fallback text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
    DECLARE
        m text[];
        off text;
        moment timestamp;
    BEGIN
        m := regexp_match(value,
            '^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$');
        IF m IS NULL THEN
            RETURN NULL;
        END IF;
        moment := make_timestamp(m[1]::int, coalesce(m[2], '01')::int, coalesce(m[3], '01')::int,
                                 coalesce(m[4], '00')::int, coalesce(m[5], '00')::int,
                                 (coalesce(m[6], '00') || coalesce(m[7], ''))::float8);
        off := coalesce(m[8], fallback);
        IF off ~ '^[+-]\d{4}$' THEN
            moment := moment - (CASE WHEN left(off, 1) = '-' THEN -1 ELSE 1 END)
                * make_interval(hours => substr(off, 2, 2)::int, mins => substr(off, 4, 2)::int);
        END IF;
        RETURN to_char(moment, 'YYYYMMDDHH24MISS.US');
    EXCEPTION WHEN others THEN
        RETURN NULL;  -- an impossible date (20241332): matches no range
    END
    $$;

CREATE INDEX patient_name_trgm ON patient USING gin (patient_name gin_trgm_ops);
-- fuzzymatching=true on PatientName: the folded name, stored so that the recheck of a
-- trigram match does not fold each candidate again (a generated column: the writer and
-- COPY fill it without knowing; adding it rewrites the patient table once)
ALTER TABLE patient ADD COLUMN patient_name_folded text
    GENERATED ALWAYS AS (tessera_fold(patient_name)) STORED;
CREATE INDEX patient_name_folded_trgm ON patient USING gin (patient_name_folded gin_trgm_ops);
CREATE INDEX patient_id_idx ON patient (patient_id);
CREATE INDEX patient_id_trgm ON patient USING gin (patient_id gin_trgm_ops);

-- The default order of every study search; also serves StudyDate(+Time) ranges.
CREATE INDEX study_order ON study (study_date DESC, study_time DESC, pk DESC);
DROP INDEX study_date_idx;
CREATE INDEX study_accession_trgm ON study USING gin (accession_number gin_trgm_ops);
CREATE INDEX study_description_trgm ON study USING gin (study_description gin_trgm_ops);
CREATE INDEX study_referring_trgm ON study USING gin (referring_physician_name gin_trgm_ops);
CREATE INDEX study_modalities ON study USING gin (modalities_in_study);
CREATE INDEX study_id_idx ON study (study_id);

-- Where a background reindex (python -m tessera.index.reindex) has got to, per phase.
CREATE TABLE reindex_progress (
    phase       text PRIMARY KEY,          -- 'study' | 'series' | 'instance'
    last_pk     bigint NOT NULL DEFAULT 0, -- rows up to this pk are done
    layout      text NOT NULL,             -- the extra attributes it rebuilds for
    done        boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
