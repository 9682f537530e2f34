-- A nightly whose run date has no events ends as 'skipped': nothing new to
-- score, nothing published, and the run history says so rather than
-- recording a failure or a success it did not have.
ALTER TABLE {schema}.runs DROP CONSTRAINT runs_status_check;
ALTER TABLE {schema}.runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'skipped'));
