-- The interaction history Spark reads (jobs/data/history.py): a Parquet file per event
-- day, written from {schema}.interactions. The table records, per day, whether a
-- load changed it since its file was last written (marked_at) and how many events the
-- file holds; the triggers below mark the days each statement touched, in that
-- statement's transaction, whatever loaded or removed the rows.
CREATE TABLE {schema}.history_days (
    event_date date        PRIMARY KEY,
    events     bigint      CHECK (events >= 0),
    marked_at  timestamptz,
    written_at timestamptz
);
-- Names this database's history: its default folder is $BATCHSCORE_HOME/history/<store_id>,
-- so two databases (or a database made afresh) never share one.
CREATE TABLE {schema}.history_store (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    store_id uuid    NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO {schema}.history_store DEFAULT VALUES;

CREATE INDEX history_days_marked_idx ON {schema}.history_days (event_date)
    WHERE marked_at IS NOT NULL;

CREATE FUNCTION {schema}.mark_history_days() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    stamp timestamptz := clock_timestamp();
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE {schema}.history_days SET marked_at = stamp;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO {schema}.history_days (event_date, marked_at)
        SELECT DISTINCT (event_at AT TIME ZONE 'UTC')::date, stamp FROM new_rows
        ON CONFLICT (event_date) DO UPDATE SET marked_at = EXCLUDED.marked_at;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {schema}.history_days (event_date, marked_at)
        SELECT DISTINCT (event_at AT TIME ZONE 'UTC')::date, stamp FROM old_rows
        ON CONFLICT (event_date) DO UPDATE SET marked_at = EXCLUDED.marked_at;
    ELSE
        INSERT INTO {schema}.history_days (event_date, marked_at)
        SELECT DISTINCT (event_at AT TIME ZONE 'UTC')::date, stamp
        FROM (SELECT event_at FROM old_rows UNION ALL SELECT event_at FROM new_rows) AS moved
        ON CONFLICT (event_date) DO UPDATE SET marked_at = EXCLUDED.marked_at;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER interactions_mark_inserted AFTER INSERT ON {schema}.interactions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.mark_history_days();
CREATE TRIGGER interactions_mark_deleted AFTER DELETE ON {schema}.interactions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.mark_history_days();
CREATE TRIGGER interactions_mark_updated AFTER UPDATE ON {schema}.interactions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.mark_history_days();
CREATE TRIGGER interactions_mark_truncated AFTER TRUNCATE ON {schema}.interactions
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.mark_history_days();

-- A database with events already: every day of them is written by the first sync.
INSERT INTO {schema}.history_days (event_date, marked_at)
SELECT DISTINCT (event_at AT TIME ZONE 'UTC')::date, now() FROM {schema}.interactions;
