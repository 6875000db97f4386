-- Study labels (README "Security"): a credential limited to labels sees only the studies
-- carrying at least one of them, in QIDO-RS (filtered here, so paging stays exact) and
-- WADO-RS; what it stores gets them.
ALTER TABLE study ADD COLUMN labels text[] NOT NULL DEFAULT '{}';
CREATE INDEX study_labels ON study USING gin (labels);
