-- Data contracts. Every interaction gets an id so that rows failing the input
-- contract can be quarantined; quarantined rows are kept with their reasons;
-- files loaded by nightly runs are recorded so a re-run of a date replaces
-- that date's file instead of loading it twice.
ALTER TABLE {schema}.interactions
    ADD COLUMN event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ADD COLUMN load_id bigint;

CREATE TABLE {schema}.input_loads (
    load_id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_date  date        NOT NULL,
    sha256    text        NOT NULL,
    source    text        NOT NULL,
    run_id    text        NOT NULL REFERENCES {schema}.runs (run_id),
    rows      bigint,
    loaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX input_loads_run_date_idx ON {schema}.input_loads (run_date);
CREATE INDEX interactions_load_idx ON {schema}.interactions (load_id)
    WHERE load_id IS NOT NULL;

CREATE TABLE {schema}.rejects (
    run_id      text        NOT NULL REFERENCES {schema}.runs (run_id),
    source      text        NOT NULL,
    row_number  bigint      NOT NULL,
    row         jsonb       NOT NULL,
    reasons     text[]      NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, source, row_number)
);

CREATE VIEW {bi}.rejects AS
SELECT run_id, source, row_number, row, reasons, rejected_at FROM {schema}.rejects;
GRANT SELECT ON {bi}.rejects TO {bi_role};
