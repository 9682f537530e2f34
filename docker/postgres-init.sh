#!/usr/bin/env bash
# Logins and databases of the compose stack, run once by the postgres image on an
# empty data volume. The passwords come from docker/.env through the environment;
# psql reads them with \getenv, so they are on no command line.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv owner_password BATCHSCORE_OWNER_PASSWORD
\getenv writer_password BATCHSCORE_WRITER_PASSWORD
\getenv bi_password BATCHSCORE_BI_PASSWORD
\getenv airflow_password AIRFLOW_DB_PASSWORD
-- batchscore's roles (sql/009_roles.sql grants them their privileges): the owner
-- applies the migrations, the writer is what the DAGs' tasks connect as, bi reads
-- the bi views.
CREATE ROLE batchscore_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE batchscore_writer LOGIN PASSWORD :'writer_password';
CREATE ROLE batchscore_bi LOGIN PASSWORD :'bi_password';
CREATE DATABASE batchscore OWNER batchscore_owner;
-- Airflow's metadata database.
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
SQL
