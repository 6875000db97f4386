-- Tessera shard index, schema 4: a result order that a router can reproduce across shards.
--
-- QIDO-RS results were ordered by StudyDate, StudyTime, then the row id (pk), which is
-- total on one shard but means nothing across shards: the router merges the pages of N
-- shards (issue 6, federation), so the tiebreak is now the UIDs (StudyInstanceUID,
-- SeriesInstanceUID, SOPInstanceUID), which every result carries.
--
-- The router compares the values of the returned DICOM JSON as Python strings, that is
-- by code point, which is byte order in UTF-8: the columns it orders by are made
-- COLLATE "C" (byte order), whatever the database's default collation, so that both
-- sides agree (a linguistic collation ignores '.', and would put "1.2.3" after "1.23").
-- Row comparisons on (study_date, study_time) then use C too, and the study_order index
-- still serves them.

DROP INDEX study_order;
ALTER TABLE study
    ALTER COLUMN study_date TYPE text COLLATE "C",
    ALTER COLUMN study_time TYPE text COLLATE "C",
    ALTER COLUMN study_instance_uid TYPE text COLLATE "C";
ALTER TABLE series
    ALTER COLUMN series_number TYPE text COLLATE "C",
    ALTER COLUMN series_instance_uid TYPE text COLLATE "C";
ALTER TABLE instance
    ALTER COLUMN instance_number TYPE text COLLATE "C",
    ALTER COLUMN sop_instance_uid TYPE text COLLATE "C";
CREATE INDEX study_order ON study (study_date DESC, study_time DESC, study_instance_uid DESC);
