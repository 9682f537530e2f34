-- Who changed a model version's status, when and why. The serving history
-- also tells a backfill which model was serving as of a past date.
CREATE TABLE {schema}.model_status_history (
    version    integer     NOT NULL REFERENCES {schema}.model_versions (version),
    status     text        NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    changed_by text        NOT NULL,
    reason     text        NOT NULL
);
CREATE INDEX model_status_history_version_idx ON {schema}.model_status_history (version);

INSERT INTO {schema}.model_status_history (version, status, changed_at, changed_by, reason)
SELECT version, status, created_at, created_by, 'registered'
FROM {schema}.model_versions;

CREATE VIEW {bi}.model_status_history AS
SELECT version, status, changed_at, changed_by, reason FROM {schema}.model_status_history;
GRANT SELECT ON {bi}.model_status_history TO {bi_role};
