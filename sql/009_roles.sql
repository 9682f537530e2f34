-- Least privilege. Three roles, created without a login (logins and passwords are
-- set outside the migrations):
--   {owner}    owns the schemas {schema} and {bi} and everything in them, and
--              applies the migrations after this one (the runner sets the role);
--   {writer}   what the nightly, training, rollback, reconcile and data loads
--              connect as: rows of the tables, no DDL but the publisher's
--              partition steps, through the functions below;
--   {bi_role}  reads the {bi} views, nothing else.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {owner_name}) THEN
        CREATE ROLE {owner} NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {writer_name}) THEN
        CREATE ROLE {writer} NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {bi_role_name}) THEN
        CREATE ROLE {bi_role} NOLOGIN;
    END IF;
END
$$;

-- Everything made so far passes to the owner (identity sequences and indexes follow
-- their tables).
ALTER SCHEMA {schema} OWNER TO {owner};
ALTER SCHEMA {bi} OWNER TO {owner};
DO $$
DECLARE
    relation record;
BEGIN
    FOR relation IN
        SELECT c.oid::regclass AS name, c.relkind
        FROM pg_class c
        WHERE c.relnamespace IN ({schema_name}::regnamespace, {bi_name}::regnamespace)
          AND (c.relkind IN ('r', 'p', 'v', 'm', 'f')
               OR (c.relkind = 'S' AND NOT EXISTS (
                   SELECT 1 FROM pg_depend d
                   WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                     AND d.deptype IN ('a', 'i'))))
    LOOP
        EXECUTE format('ALTER %s %s OWNER TO {owner}',
                       CASE relation.relkind WHEN 'v' THEN 'VIEW'
                                             WHEN 'm' THEN 'MATERIALIZED VIEW'
                                             WHEN 'f' THEN 'FOREIGN TABLE'
                                             WHEN 'S' THEN 'SEQUENCE'
                                             ELSE 'TABLE' END,
                       relation.name);
    END LOOP;
END
$$;

REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
REVOKE ALL ON SCHEMA {bi} FROM PUBLIC;
GRANT USAGE ON SCHEMA {schema} TO {writer};
GRANT USAGE ON SCHEMA {bi} TO {writer}, {bi_role};
REVOKE CREATE ON SCHEMA public FROM {writer}, {bi_role};
-- Temporary tables (the input contract's, a metadata load's) are the writer's and the
-- owner's alone; only the database's owner (or a superuser) can say so.
DO $$
BEGIN
    IF pg_has_role(current_user, (SELECT datdba FROM pg_database
                                  WHERE datname = current_database()), 'MEMBER') THEN
        EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
        EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO {owner}, {writer}',
                       current_database());
    END IF;
END
$$;

-- The writer reads and writes the rows of every table, and empties the ones a load
-- with --replace replaces; it reads the applied migrations (to tell when an upgrade
-- is owed) and nothing of yoyo's own record.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {writer};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {writer};
GRANT TRUNCATE ON {schema}.interactions, {schema}.items, {schema}.users
    TO {writer};
DO $$
DECLARE
    bookkeeping regclass;
BEGIN
    FOR bookkeeping IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.relnamespace = {schema_name}::regnamespace AND c.relkind IN ('r', 'p')
          AND c.relname LIKE '%yoyo%'
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM {writer}', bookkeeping);
    END LOOP;
END
$$;
REVOKE ALL ON {schema}.schema_migrations FROM {writer};
GRANT SELECT ON {schema}.schema_migrations TO {writer};
GRANT SELECT ON ALL TABLES IN SCHEMA {bi} TO {writer}, {bi_role};

-- What later migrations create (as the owner) is granted the same way.
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema}
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {writer};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema}
    GRANT USAGE ON SEQUENCES TO {writer};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {bi}
    GRANT SELECT ON TABLES TO {writer}, {bi_role};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- The publisher's DDL, and only it: a version's table is created, indexed, attached
-- as a partition of {schema}.predictions, detached and dropped by these functions,
-- which run as the owner (SECURITY DEFINER) and can touch no table but
-- {schema}.predictions_p<publish_id>. The writer may call them; nobody else.
CREATE FUNCTION {schema}.create_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- The partition's CHECK exists before the load, so attaching needs no scan.
    EXECUTE format('CREATE TABLE {schema}.%I (LIKE {schema}.predictions INCLUDING ALL,'
                   ' CHECK (publish_id = %s))', 'predictions_p' || publish_id, publish_id);
END
$$;

CREATE FUNCTION {schema}.index_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('CREATE INDEX ON {schema}.%I (user_id, rank)',
                   'predictions_p' || publish_id);
    EXECUTE format('ANALYZE {schema}.%I', 'predictions_p' || publish_id);
END
$$;

CREATE FUNCTION {schema}.attach_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('ALTER TABLE {schema}.predictions ATTACH PARTITION {schema}.%I'
                   ' FOR VALUES IN (%s)', 'predictions_p' || publish_id, publish_id);
END
$$;

CREATE FUNCTION {schema}.drop_version_table(publish_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c
               WHERE c.relnamespace = {schema_name}::regnamespace
                 AND c.relname = 'predictions_p' || publish_id AND c.relispartition) THEN
        EXECUTE format('ALTER TABLE {schema}.predictions DETACH PARTITION {schema}.%I',
                       'predictions_p' || publish_id);
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS {schema}.%I', 'predictions_p' || publish_id);
END
$$;

ALTER FUNCTION {schema}.create_version_table(bigint) OWNER TO {owner};
ALTER FUNCTION {schema}.index_version_table(bigint) OWNER TO {owner};
ALTER FUNCTION {schema}.attach_version_table(bigint) OWNER TO {owner};
ALTER FUNCTION {schema}.drop_version_table(bigint) OWNER TO {owner};
REVOKE ALL ON FUNCTION {schema}.create_version_table(bigint),
    {schema}.index_version_table(bigint), {schema}.attach_version_table(bigint),
    {schema}.drop_version_table(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {schema}.create_version_table(bigint),
    {schema}.index_version_table(bigint), {schema}.attach_version_table(bigint),
    {schema}.drop_version_table(bigint) TO {writer};
