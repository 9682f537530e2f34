-- One row per user and version (README, Performance): a version's lists are kept as
-- the user's item ids and scores, best first, in two arrays, instead of one row per
-- (user, rank). Partitioning needs the version's id in each row; it is now there once
-- per user instead of once per rank, and the per-version index is on user_id alone.
-- Every bi view keeps its columns and meaning; {bi}.recommendation_lists and
-- {bi}.recommendation_lists_history give a user's whole list as one row.
CREATE TABLE {schema}.prediction_lists (
    publish_id bigint    NOT NULL,
    user_id    bigint    NOT NULL,
    item_ids   integer[] NOT NULL,
    scores     real[]    NOT NULL,
    CHECK (cardinality(item_ids) = cardinality(scores) AND cardinality(item_ids) > 0)
) PARTITION BY LIST (publish_id);

-- The versions written by earlier releases are rewritten into the new layout, each
-- into its own table, attached where the old one was.
DROP VIEW {bi}.recommendations;
DROP VIEW {bi}.recommendations_history;
ALTER TABLE {schema}.predictions RENAME TO predictions_by_rank;
DO $$
DECLARE
    old record;
BEGIN
    FOR old IN
        SELECT c.relname, substring(c.relname FROM 14)::bigint AS publish_id,
               c.relispartition AS attached
        FROM pg_class c
        WHERE c.relnamespace = {schema_name}::regnamespace AND c.relkind = 'r'
          AND c.relname ~ '^predictions_p[0-9]+$'
        ORDER BY 2
    LOOP
        EXECUTE format('CREATE TABLE {schema}.%I (LIKE {schema}.prediction_lists'
                       ' INCLUDING ALL, CHECK (publish_id = %s))',
                       'prediction_lists_p' || old.publish_id, old.publish_id);
        EXECUTE format('INSERT INTO {schema}.%I (publish_id, user_id, item_ids, scores)'
                       ' SELECT %s, user_id, array_agg(item_id::integer ORDER BY rank),'
                       '  array_agg(score ORDER BY rank) FROM {schema}.%I GROUP BY user_id',
                       'prediction_lists_p' || old.publish_id, old.publish_id, old.relname);
        EXECUTE format('CREATE INDEX ON {schema}.%I (user_id)',
                       'prediction_lists_p' || old.publish_id);
        IF old.attached THEN
            EXECUTE format('ALTER TABLE {schema}.prediction_lists ATTACH PARTITION'
                           ' {schema}.%I FOR VALUES IN (%s)',
                           'prediction_lists_p' || old.publish_id, old.publish_id);
        END IF;
        EXECUTE format('DROP TABLE {schema}.%I', old.relname);
    END LOOP;
END
$$;
DROP TABLE {schema}.predictions_by_rank;

-- The row-per-rank shape, for batchscore's own queries that want it.
CREATE VIEW {schema}.predictions AS
SELECT l.publish_id,
       l.user_id,
       e.rank::smallint AS rank,
       e.item_id::bigint AS item_id,
       e.score
FROM {schema}.prediction_lists AS l
CROSS JOIN LATERAL unnest(l.item_ids, l.scores) WITH ORDINALITY AS e (item_id, score, rank);

-- A user's whole list as one row: item_ids[1] is rank 1.
CREATE VIEW {bi}.recommendation_lists AS
SELECT l.user_id,
       l.item_ids,
       l.scores,
       v.run_id,
       coalesce(c.model_version, v.model_version) AS model_version,
       v.logical_date
FROM {schema}.prediction_lists AS l
JOIN {schema}.prediction_versions AS v ON v.publish_id = l.publish_id
LEFT JOIN {schema}.canary_users AS c
       ON c.publish_id = l.publish_id AND c.user_id = l.user_id
WHERE l.publish_id = (SELECT s.publish_id FROM {schema}.serving AS s);

CREATE VIEW {bi}.recommendation_lists_history AS
SELECT l.user_id,
       l.item_ids,
       l.scores,
       v.publish_id,
       v.run_id,
       coalesce(c.model_version, v.model_version) AS model_version,
       v.logical_date,
       v.published_at,
       v.publish_id = (SELECT s.publish_id FROM {schema}.serving AS s) AS is_serving,
       v.status
FROM {schema}.prediction_lists AS l
JOIN {schema}.prediction_versions AS v ON v.publish_id = l.publish_id
LEFT JOIN {schema}.canary_users AS c
       ON c.publish_id = l.publish_id AND c.user_id = l.user_id
WHERE v.status <> 'staged';

-- The same lists one row per rank, with the columns BI has always read.
CREATE VIEW {bi}.recommendations AS
SELECT l.user_id,
       e.rank::smallint AS rank,
       e.item_id::bigint AS item_id,
       e.score,
       l.run_id,
       l.model_version,
       l.logical_date
FROM {bi}.recommendation_lists AS l
CROSS JOIN LATERAL unnest(l.item_ids, l.scores) WITH ORDINALITY AS e (item_id, score, rank);

CREATE VIEW {bi}.recommendations_history AS
SELECT l.user_id,
       e.rank::smallint AS rank,
       e.item_id::bigint AS item_id,
       e.score,
       l.publish_id,
       l.run_id,
       l.model_version,
       l.logical_date,
       l.published_at,
       l.is_serving,
       l.status
FROM {bi}.recommendation_lists_history AS l
CROSS JOIN LATERAL unnest(l.item_ids, l.scores) WITH ORDINALITY AS e (item_id, score, rank);

-- The publisher's DDL functions, for the new tables.
CREATE OR REPLACE FUNCTION {schema}.create_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- The partition's CHECK exists before the load, so attaching needs no scan.
    EXECUTE format('CREATE TABLE {schema}.%I (LIKE {schema}.prediction_lists'
                   ' INCLUDING ALL, CHECK (publish_id = %s))',
                   'prediction_lists_p' || publish_id, publish_id);
END
$$;

CREATE OR REPLACE FUNCTION {schema}.index_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('CREATE INDEX ON {schema}.%I (user_id)',
                   'prediction_lists_p' || publish_id);
    EXECUTE format('ANALYZE {schema}.%I', 'prediction_lists_p' || publish_id);
END
$$;

CREATE OR REPLACE FUNCTION {schema}.attach_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('ALTER TABLE {schema}.prediction_lists ATTACH PARTITION {schema}.%I'
                   ' FOR VALUES IN (%s)', 'prediction_lists_p' || publish_id, publish_id);
END
$$;

CREATE OR REPLACE FUNCTION {schema}.drop_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c
               WHERE c.relnamespace = {schema_name}::regnamespace
                 AND c.relname = 'prediction_lists_p' || publish_id AND c.relispartition) THEN
        EXECUTE format('ALTER TABLE {schema}.prediction_lists DETACH PARTITION'
                       ' {schema}.%I', 'prediction_lists_p' || publish_id);
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS {schema}.%I', 'prediction_lists_p' || publish_id);
END
$$;
