-- Least privilege. Three roles, created without a login (logins and passwords are
-- set outside the migrations):
--   batchscore_owner   owns the schemas batchscore and bi and everything in them, and
--                      applies the migrations after this one (the runner sets the role);
--   batchscore_writer  what the nightly, training, rollback, reconcile and data loads
--                      connect as: rows of the tables, no DDL but the publisher's
--                      partition steps, through the functions below;
--   batchscore_bi      reads the bi views, nothing else.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'batchscore_owner') THEN
        CREATE ROLE batchscore_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'batchscore_writer') THEN
        CREATE ROLE batchscore_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'batchscore_bi') THEN
        CREATE ROLE batchscore_bi NOLOGIN;
    END IF;
END
$$;

-- Everything made so far passes to the owner (identity sequences and indexes follow
-- their tables).
ALTER SCHEMA batchscore OWNER TO batchscore_owner;
ALTER SCHEMA bi OWNER TO batchscore_owner;
DO $$
DECLARE
    relation record;
BEGIN
    FOR relation IN
        SELECT c.oid::regclass AS name, c.relkind
        FROM pg_class c
        WHERE c.relnamespace IN ('batchscore'::regnamespace, 'bi'::regnamespace)
          AND (c.relkind IN ('r', 'p', 'v', 'm', 'f')
               OR (c.relkind = 'S' AND NOT EXISTS (
                   SELECT 1 FROM pg_depend d
                   WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                     AND d.deptype IN ('a', 'i'))))
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO batchscore_owner',
                       CASE relation.relkind WHEN 'v' THEN 'VIEW'
                                             WHEN 'm' THEN 'MATERIALIZED VIEW'
                                             WHEN 'f' THEN 'FOREIGN TABLE'
                                             WHEN 'S' THEN 'SEQUENCE'
                                             ELSE 'TABLE' END,
                       relation.name);
    END LOOP;
END
$$;

REVOKE ALL ON SCHEMA batchscore FROM PUBLIC;
REVOKE ALL ON SCHEMA bi FROM PUBLIC;
GRANT USAGE ON SCHEMA batchscore TO batchscore_writer;
GRANT USAGE ON SCHEMA bi TO batchscore_writer, batchscore_bi;
REVOKE CREATE ON SCHEMA public FROM batchscore_writer, batchscore_bi;
-- Temporary tables (the input contract's, a metadata load's) are the writer's and the
-- owner's alone; only the database's owner (or a superuser) can say so.
DO $$
BEGIN
    IF pg_has_role(current_user, (SELECT datdba FROM pg_database
                                  WHERE datname = current_database()), 'MEMBER') THEN
        EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
        EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO batchscore_owner, batchscore_writer',
                       current_database());
    END IF;
END
$$;

-- The writer reads and writes the rows of every table, and empties the ones a load
-- with --replace replaces; it reads the applied migrations (to tell when an upgrade
-- is owed) and nothing of yoyo's own record.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA batchscore TO batchscore_writer;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA batchscore TO batchscore_writer;
GRANT TRUNCATE ON batchscore.interactions, batchscore.items, batchscore.users
    TO batchscore_writer;
DO $$
DECLARE
    bookkeeping regclass;
BEGIN
    FOR bookkeeping IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.relnamespace = 'batchscore'::regnamespace AND c.relkind IN ('r', 'p')
          AND c.relname LIKE '%yoyo%'
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM batchscore_writer', bookkeeping);
    END LOOP;
END
$$;
REVOKE ALL ON batchscore.schema_migrations FROM batchscore_writer;
GRANT SELECT ON batchscore.schema_migrations TO batchscore_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA bi TO batchscore_writer, batchscore_bi;

-- What later migrations create (as the owner) is granted the same way.
ALTER DEFAULT PRIVILEGES FOR ROLE batchscore_owner IN SCHEMA batchscore
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO batchscore_writer;
ALTER DEFAULT PRIVILEGES FOR ROLE batchscore_owner IN SCHEMA batchscore
    GRANT USAGE ON SEQUENCES TO batchscore_writer;
ALTER DEFAULT PRIVILEGES FOR ROLE batchscore_owner IN SCHEMA bi
    GRANT SELECT ON TABLES TO batchscore_writer, batchscore_bi;
ALTER DEFAULT PRIVILEGES FOR ROLE batchscore_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- The publisher's DDL, and only it: a version's table is created, indexed, attached
-- as a partition of batchscore.predictions, detached and dropped by these functions,
-- which run as the owner (SECURITY DEFINER) and can touch no table but
-- batchscore.predictions_p<publish_id>. The writer may call them; nobody else.
CREATE FUNCTION batchscore.create_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- The partition's CHECK exists before the load, so attaching needs no scan.
    EXECUTE format('CREATE TABLE batchscore.%I (LIKE batchscore.predictions INCLUDING ALL,'
                   ' CHECK (publish_id = %s))', 'predictions_p' || publish_id, publish_id);
END
$$;

CREATE FUNCTION batchscore.index_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('CREATE INDEX ON batchscore.%I (user_id, rank)',
                   'predictions_p' || publish_id);
    EXECUTE format('ANALYZE batchscore.%I', 'predictions_p' || publish_id);
END
$$;

CREATE FUNCTION batchscore.attach_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('ALTER TABLE batchscore.predictions ATTACH PARTITION batchscore.%I'
                   ' FOR VALUES IN (%s)', 'predictions_p' || publish_id, publish_id);
END
$$;

CREATE FUNCTION batchscore.drop_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c
               WHERE c.relnamespace = 'batchscore'::regnamespace
                 AND c.relname = 'predictions_p' || publish_id AND c.relispartition) THEN
        EXECUTE format('ALTER TABLE batchscore.predictions DETACH PARTITION batchscore.%I',
                       'predictions_p' || publish_id);
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS batchscore.%I', 'predictions_p' || publish_id);
END
$$;

ALTER FUNCTION batchscore.create_version_table(bigint) OWNER TO batchscore_owner;
ALTER FUNCTION batchscore.index_version_table(bigint) OWNER TO batchscore_owner;
ALTER FUNCTION batchscore.attach_version_table(bigint) OWNER TO batchscore_owner;
ALTER FUNCTION batchscore.drop_version_table(bigint) OWNER TO batchscore_owner;
REVOKE ALL ON FUNCTION batchscore.create_version_table(bigint),
    batchscore.index_version_table(bigint), batchscore.attach_version_table(bigint),
    batchscore.drop_version_table(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION batchscore.create_version_table(bigint),
    batchscore.index_version_table(bigint), batchscore.attach_version_table(bigint),
    batchscore.drop_version_table(bigint) TO batchscore_writer;
