-- The BI contract: stable views in schema {bi}, readable by the {bi_role} role.
CREATE SCHEMA IF NOT EXISTS {bi};

-- The served version only. The scalar subquery lets PostgreSQL prune every
-- other partition when the query starts, and a query sees one version whole.
CREATE VIEW {bi}.recommendations AS
SELECT p.user_id,
       p.rank,
       p.item_id,
       p.score,
       v.run_id,
       v.model_version,
       v.logical_date
FROM {schema}.predictions AS p
JOIN {schema}.prediction_versions AS v ON v.publish_id = p.publish_id
WHERE p.publish_id = (SELECT s.publish_id FROM {schema}.serving AS s);

-- Every kept version, one row per (publish_id, user_id, rank).
CREATE VIEW {bi}.recommendations_history AS
SELECT p.user_id,
       p.rank,
       p.item_id,
       p.score,
       v.publish_id,
       v.run_id,
       v.model_version,
       v.logical_date,
       v.published_at,
       v.publish_id = (SELECT s.publish_id FROM {schema}.serving AS s) AS is_serving
FROM {schema}.predictions AS p
JOIN {schema}.prediction_versions AS v ON v.publish_id = p.publish_id;

CREATE VIEW {bi}.popular_items AS
SELECT pi.rank, pi.item_id, pi.score, v.run_id, v.model_version, v.logical_date
FROM {schema}.popular_items AS pi
JOIN {schema}.prediction_versions AS v ON v.publish_id = pi.publish_id
WHERE pi.publish_id = (SELECT s.publish_id FROM {schema}.serving AS s);

CREATE VIEW {bi}.prediction_versions AS
SELECT v.publish_id, v.run_id, v.model_version, v.logical_date, v.k, v.status,
       v.users, v.rows, v.created_at, v.published_at, v.dropped_at,
       v.publish_id = (SELECT s.publish_id FROM {schema}.serving AS s) AS is_serving
FROM {schema}.prediction_versions AS v;

CREATE VIEW {bi}.runs AS
SELECT run_id, kind, logical_date, model_version, status, started_at, finished_at,
       started_by, code_version, stats, error
FROM {schema}.runs;

CREATE VIEW {bi}.model_versions AS
SELECT version, status, created_at, created_by, trained_as_of, params, metrics,
       data_snapshot, code_version, artifact_uri
FROM {schema}.model_versions;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {bi_role_name}) THEN
        CREATE ROLE {bi_role} NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA {bi} TO {bi_role};
GRANT SELECT ON ALL TABLES IN SCHEMA {bi} TO {bi_role};
