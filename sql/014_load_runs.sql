-- `batchscore data load` is recorded as a run of kind 'load' (jobs/contracts/inputs.py),
-- so that the events its contract quarantined have a run in {schema}.rejects and
-- `batchscore runs list` shows each load beside the nightlies.
ALTER TABLE {schema}.runs DROP CONSTRAINT runs_kind_check;
ALTER TABLE {schema}.runs ADD CONSTRAINT runs_kind_check CHECK (kind IN ('nightly', 'load'));
