-- The publish protocol (schemas/publishing.md). A run holds a lease while a
-- process works on it: an advisory lock for as long as the process lives,
-- and heartbeat_at + lease_seconds for the gaps between the processes of one
-- run (Airflow's tasks). Reconcile treats a running run whose lock is free
-- and whose lease has run out as a run whose process is gone.
ALTER TABLE {schema}.runs
    ADD COLUMN heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN lease_seconds integer     NOT NULL DEFAULT 0 CHECK (lease_seconds >= 0);
CREATE INDEX runs_running_idx ON {schema}.runs (started_at) WHERE status = 'running';
CREATE INDEX prediction_versions_staged_idx ON {schema}.prediction_versions (run_id)
    WHERE status = 'staged';


-- A staged version's table is attached in a transaction of its own before the
-- switch that serves it (so no reader can see it served without its
-- partition); until then the history view leaves it out.
CREATE OR REPLACE VIEW {bi}.recommendations_history AS
SELECT p.user_id,
       p.rank,
       p.item_id,
       p.score,
       v.publish_id,
       v.run_id,
       coalesce(c.model_version, v.model_version) AS model_version,
       v.logical_date,
       v.published_at,
       v.publish_id = (SELECT s.publish_id FROM {schema}.serving AS s) AS is_serving,
       v.status
FROM {schema}.predictions AS p
JOIN {schema}.prediction_versions AS v ON v.publish_id = p.publish_id
LEFT JOIN {schema}.canary_users AS c
       ON c.publish_id = p.publish_id AND c.user_id = p.user_id
WHERE v.status <> 'staged';

-- Runs are nightly runs; training records its versions in the registry instead.
ALTER TABLE {schema}.runs DROP CONSTRAINT runs_kind_check;
ALTER TABLE {schema}.runs ADD CONSTRAINT runs_kind_check CHECK (kind = 'nightly');
