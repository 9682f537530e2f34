-- Published predictions. Each published version is one partition of
-- {schema}.predictions, loaded aside and attached when it is switched in;
-- {schema}.serving names the version readers see.
CREATE TABLE {schema}.prediction_versions (
    publish_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id        text        NOT NULL REFERENCES {schema}.runs (run_id),
    model_version integer     NOT NULL REFERENCES {schema}.model_versions (version),
    logical_date  date        NOT NULL,
    k             integer     NOT NULL CHECK (k > 0),
    status        text        NOT NULL
                  CHECK (status IN ('staged', 'published', 'superseded', 'dropped', 'failed')),
    users         bigint,
    rows          bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    dropped_at    timestamptz
);
-- One kept version per logical date: a re-run replaces, never duplicates.
CREATE UNIQUE INDEX prediction_versions_one_per_date_idx
    ON {schema}.prediction_versions (logical_date) WHERE status = 'published';

CREATE TABLE {schema}.predictions (
    publish_id bigint   NOT NULL,
    user_id    bigint   NOT NULL,
    rank       smallint NOT NULL CHECK (rank > 0),
    item_id    bigint   NOT NULL,
    score      real     NOT NULL
) PARTITION BY LIST (publish_id);

-- The fallback list for users without predictions, per published version.
CREATE TABLE {schema}.popular_items (
    publish_id bigint   NOT NULL REFERENCES {schema}.prediction_versions (publish_id)
               ON DELETE CASCADE,
    rank       smallint NOT NULL CHECK (rank > 0),
    item_id    bigint   NOT NULL,
    score      real     NOT NULL,
    PRIMARY KEY (publish_id, rank)
);

-- The one row naming the served version; switching is one UPDATE.
CREATE TABLE {schema}.serving (
    only_row    boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    publish_id  bigint      NOT NULL REFERENCES {schema}.prediction_versions (publish_id),
    switched_at timestamptz NOT NULL DEFAULT now()
);
