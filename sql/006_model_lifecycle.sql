-- Model lifecycle: the statuses a version moves through, its artifacts with
-- checksums, the gates it was judged by and its reports; shadow and canary
-- publishes; the serving history a rollback walks back; optional user
-- attributes the fairness report segments by.
ALTER TABLE {schema}.model_versions DROP CONSTRAINT model_versions_status_check;
ALTER TABLE {schema}.model_versions ADD CONSTRAINT model_versions_status_check
    CHECK (status IN ('candidate', 'shadow', 'canary', 'serving', 'retired', 'rejected',
                      'rolled_back'));
ALTER TABLE {schema}.model_versions
    ADD COLUMN artifacts jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN gates     jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    ADD COLUMN reports   jsonb NOT NULL DEFAULT '{{}}'::jsonb;

-- A shadow version is stored beside the served ones and never served; a
-- rolled-back version stays for inspection until it leaves the kept window.
ALTER TABLE {schema}.prediction_versions DROP CONSTRAINT prediction_versions_status_check;
ALTER TABLE {schema}.prediction_versions ADD CONSTRAINT prediction_versions_status_check
    CHECK (status IN ('staged', 'published', 'superseded', 'dropped', 'failed', 'shadow',
                      'rolled_back'));
ALTER TABLE {schema}.prediction_versions
    ADD COLUMN canary_model_version integer REFERENCES {schema}.model_versions (version),
    ADD COLUMN canary_fraction double precision
        CHECK (canary_fraction IS NULL OR (canary_fraction > 0 AND canary_fraction < 1));

-- The users of a canary publish who were served the canary model; every
-- other user of that publish got its model_version.
CREATE TABLE {schema}.canary_users (
    publish_id    bigint  NOT NULL REFERENCES {schema}.prediction_versions (publish_id)
                  ON DELETE CASCADE,
    user_id       bigint  NOT NULL,
    model_version integer NOT NULL REFERENCES {schema}.model_versions (version),
    PRIMARY KEY (publish_id, user_id)
);

-- Every switch of the served version, by a publish or a rollback.
CREATE TABLE {schema}.serving_history (
    switched_at         timestamptz NOT NULL DEFAULT now(),
    publish_id          bigint      NOT NULL
                        REFERENCES {schema}.prediction_versions (publish_id),
    previous_publish_id bigint REFERENCES {schema}.prediction_versions (publish_id),
    action              text        NOT NULL CHECK (action IN ('publish', 'rollback')),
    switched_by         text        NOT NULL,
    reason              text        NOT NULL
);
CREATE INDEX serving_history_switched_at_idx ON {schema}.serving_history (switched_at);
INSERT INTO {schema}.serving_history (switched_at, publish_id, action, switched_by, reason)
SELECT switched_at, publish_id, 'publish', 'migration', 'served when history began'
FROM {schema}.serving;

-- Optional user attributes (for example a country and a plan).
CREATE TABLE {schema}.users (
    user_id    bigint PRIMARY KEY CHECK (user_id > 0),
    attributes jsonb  NOT NULL DEFAULT '{{}}'::jsonb
);

CREATE OR REPLACE VIEW {bi}.recommendations AS
SELECT p.user_id,
       p.rank,
       p.item_id,
       p.score,
       v.run_id,
       coalesce(c.model_version, v.model_version) AS model_version,
       v.logical_date
FROM {schema}.predictions AS p
JOIN {schema}.prediction_versions AS v ON v.publish_id = p.publish_id
LEFT JOIN {schema}.canary_users AS c
       ON c.publish_id = p.publish_id AND c.user_id = p.user_id
WHERE p.publish_id = (SELECT s.publish_id FROM {schema}.serving AS s);

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
       ON c.publish_id = p.publish_id AND c.user_id = p.user_id;

CREATE OR REPLACE VIEW {bi}.prediction_versions AS
SELECT v.publish_id, v.run_id, v.model_version, v.logical_date, v.k, v.status,
       v.users, v.rows, v.created_at, v.published_at, v.dropped_at,
       v.publish_id = (SELECT s.publish_id FROM {schema}.serving AS s) AS is_serving,
       v.canary_model_version, v.canary_fraction
FROM {schema}.prediction_versions AS v;

CREATE OR REPLACE VIEW {bi}.model_versions AS
SELECT version, status, created_at, created_by, trained_as_of, params, metrics,
       data_snapshot, code_version, artifact_uri, artifacts, gates, reports
FROM {schema}.model_versions;

CREATE VIEW {bi}.canary_users AS
SELECT c.publish_id, c.user_id, c.model_version, v.logical_date, v.run_id
FROM {schema}.canary_users AS c
JOIN {schema}.prediction_versions AS v ON v.publish_id = c.publish_id;

CREATE VIEW {bi}.serving_history AS
SELECT switched_at, publish_id, previous_publish_id, action, switched_by, reason
FROM {schema}.serving_history;

GRANT SELECT ON ALL TABLES IN SCHEMA {bi} TO {bi_role};
