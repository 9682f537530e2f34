-- A version's table is written once, indexed and ANALYZEd by the publisher, and never
-- changed again: autovacuum has nothing to clean in it. But PostgreSQL starts a vacuum
-- after a large insert (autovacuum_vacuum_insert_threshold), and at 10,000,000 users
-- that vacuum scanned the staged table for minutes holding the lock ATTACH PARTITION
-- waits for, so the switch gave up (its lock waits are bounded, to stay clear of BI
-- queries). Version tables are made with autovacuum off, those already there too;
-- PostgreSQL still vacuums them against transaction id wraparound.
CREATE OR REPLACE FUNCTION {schema}.create_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- The partition's CHECK exists before the load, so attaching needs no scan.
    EXECUTE format('CREATE TABLE {schema}.%I (LIKE {schema}.prediction_lists'
                   ' INCLUDING ALL, CHECK (publish_id = %s))'
                   ' WITH (autovacuum_enabled = false, toast.autovacuum_enabled = false)',
                   'prediction_lists_p' || publish_id, publish_id);
END
$$;

DO $$
DECLARE
    version_table text;
BEGIN
    FOR version_table IN
        SELECT c.relname FROM pg_class c
        WHERE c.relnamespace = {schema_name}::regnamespace AND c.relkind = 'r'
          AND c.relname ~ '^prediction_lists_p[0-9]+$'
    LOOP
        EXECUTE format('ALTER TABLE {schema}.%I SET (autovacuum_enabled = false,'
                       ' toast.autovacuum_enabled = false)', version_table);
    END LOOP;
END
$$;
