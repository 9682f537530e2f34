-- `batchscore data load` is recorded as a run of kind 'load' (jobs/contracts/inputs.py),
-- so that the events its contract quarantined have a run in batchscore.rejects and
-- `batchscore runs list` shows each load beside the nightlies.
ALTER TABLE batchscore.runs DROP CONSTRAINT runs_kind_check;
ALTER TABLE batchscore.runs ADD CONSTRAINT runs_kind_check CHECK (kind IN ('nightly', 'load'));
