"""batchscore: nightly per-user recommendations, published to PostgreSQL and Redis.

One sub-package per stage of the flow, each depending only on the ones listed
before it (a test holds them to it):

- ``platform``: settings, the embedded servers, database connections and
  migrations, the Spark session, provenance, artifacts, the run history;
- ``data``: interactions in (load, generate, the table);
- ``contracts``: the Great Expectations gates, the Redis key/value format, the
  canary's user assignment;
- ``lifecycle``: the model registry and every change of a model's status;
- ``scoring``: the Spark scoring job and its pure transforms;
- ``bundles``: MLeap bundles, exported from Spark and scored without it;
- ``training``: the Spark training job and the evaluation that judges a model;
- ``publish``: writing a version to each store, switching both, reconcile;
- ``client``: the read side product services import;
- ``orchestration``: the nightly's steps, rollback, the Airflow glue;
- ``cli`` and ``bench``: the command line and the benchmarks, over all of them.
"""
