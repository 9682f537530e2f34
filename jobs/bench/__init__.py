"""Side-by-side benchmarks: batchscore's scorer and publishers against what a
user would otherwise run (Spark's ``recommendForAllUsers``, Spark's JDBC
writer, ``psql \\copy``, ``redis-cli --pipe``, ``redis-benchmark``), measured
in one run on the same machine and servers, reported as ratios.

``python -m jobs.bench`` (or ``batchscore bench``) runs every pair;
``--scale`` runs the nightly steps end to end at 1,000,000 users x 20,000 items.
"""
