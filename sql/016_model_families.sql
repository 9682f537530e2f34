-- Two model families serve: ALS (a Spark factor model) and EASE (an item-item model
-- in a portable format). Each version records its family; every earlier version is
-- an ALS model.
ALTER TABLE {schema}.model_versions
    ADD COLUMN kind text NOT NULL DEFAULT 'als' CHECK (kind IN ('als', 'ease'));

CREATE OR REPLACE VIEW {bi}.model_versions AS
SELECT version, status, created_at, created_by, trained_as_of, params, metrics,
       data_snapshot, code_version, artifact_uri, artifacts, gates, reports, kind
FROM {schema}.model_versions;
