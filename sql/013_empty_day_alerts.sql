-- A nightly whose date has no input events raises an alert of its own level,
-- 'empty' (jobs/monitoring/alerts.py): an empty day is almost always a broken
-- upstream feed. BATCHSCORE_EMPTY_DAY chooses whether the run is skipped or failed.
ALTER TABLE {schema}.alerts DROP CONSTRAINT alerts_level_check;
ALTER TABLE {schema}.alerts ADD CONSTRAINT alerts_level_check
    CHECK (level IN ('failed', 'warn', 'retrain', 'empty'));
