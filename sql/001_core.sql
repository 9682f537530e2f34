-- Core tables: interactions in, item metadata, model versions and runs.
CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE {schema}.interactions (
    user_id   bigint           NOT NULL CHECK (user_id > 0),
    item_id   bigint           NOT NULL CHECK (item_id > 0),
    rating    double precision NOT NULL CHECK (rating > 0 AND rating < 'Infinity'),
    event_at  timestamptz      NOT NULL,
    loaded_at timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX interactions_event_at_idx ON {schema}.interactions (event_at);
CREATE INDEX interactions_user_idx ON {schema}.interactions (user_id);

-- Optional item metadata; predictions do not require a row here.
CREATE TABLE {schema}.items (
    item_id    bigint PRIMARY KEY CHECK (item_id > 0),
    title      text,
    attributes jsonb NOT NULL DEFAULT '{{}}'::jsonb
);

CREATE TABLE {schema}.model_versions (
    version       integer     PRIMARY KEY CHECK (version > 0),
    status        text        NOT NULL
                  CHECK (status IN ('candidate', 'serving', 'retired', 'rejected')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text        NOT NULL,
    trained_as_of date        NOT NULL,
    params        jsonb       NOT NULL,
    metrics       jsonb       NOT NULL,
    data_snapshot jsonb       NOT NULL,
    code_version  text        NOT NULL,
    artifact_uri  text        NOT NULL
);
-- At most one version serves at a time.
CREATE UNIQUE INDEX model_versions_one_serving_idx
    ON {schema}.model_versions ((true)) WHERE status = 'serving';

CREATE TABLE {schema}.runs (
    run_id        text        PRIMARY KEY,
    kind          text        NOT NULL CHECK (kind IN ('train', 'nightly')),
    logical_date  date        NOT NULL,
    model_version integer     REFERENCES {schema}.model_versions (version),
    status        text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    started_by    text        NOT NULL,
    code_version  text        NOT NULL,
    stats         jsonb       NOT NULL DEFAULT '{{}}'::jsonb,
    error         text
);
CREATE INDEX runs_logical_date_idx ON {schema}.runs (kind, logical_date);
