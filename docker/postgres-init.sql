-- Databases and logins of the compose stack: batchscore's own, and Airflow's metadata.
CREATE ROLE batchscore LOGIN PASSWORD 'batchscore';
CREATE DATABASE batchscore OWNER batchscore;
CREATE ROLE airflow LOGIN PASSWORD 'airflow';
CREATE DATABASE airflow OWNER airflow;
