-- BI's "most recommended items" without unnesting a version's lists: per version and
-- item, the users whose list holds the item and the item's mean rank in those lists,
-- read from the counts the publisher stores with each version (017). Versions loaded
-- before those counts existed have no rows here; bi.recommendations still counts them.
CREATE VIEW {bi}.item_exposure_history AS
SELECT e.item_id,
       e.users,
       e.rank_sum::double precision / e.users AS mean_rank,
       v.publish_id,
       v.run_id,
       v.model_version,
       v.logical_date,
       v.published_at,
       v.is_serving,
       v.status
FROM {schema}.prediction_item_exposure AS e
JOIN {bi}.prediction_versions AS v ON v.publish_id = e.publish_id
WHERE v.status <> 'staged';

CREATE VIEW {bi}.item_exposure AS
SELECT item_id, users, mean_rank, run_id, model_version, logical_date
FROM {bi}.item_exposure_history
WHERE is_serving;
