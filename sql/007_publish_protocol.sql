-- The publish protocol (schemas/publishing.md). A run holds a lease while a
-- process works on it: an advisory lock for as long as the process lives,
-- and heartbeat_at + lease_seconds for the gaps between the processes of one
-- run (Airflow's tasks). Reconcile treats a running run whose lock is free
-- and whose lease has run out as a run whose process is gone.
ALTER TABLE batchscore.runs
    ADD COLUMN heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN lease_seconds integer     NOT NULL DEFAULT 0 CHECK (lease_seconds >= 0);
CREATE INDEX runs_running_idx ON batchscore.runs (started_at) WHERE status = 'running';
CREATE INDEX prediction_versions_staged_idx ON batchscore.prediction_versions (run_id)
    WHERE status = 'staged';

