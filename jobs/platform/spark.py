"""Building the Spark session the jobs run in."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)


DEFAULT_DRIVER_MEMORY = "4g"


def spark_session(app_name: str, master: str | None = None, *,
                  driver_memory: str = DEFAULT_DRIVER_MEMORY,
                  shuffle_partitions: int | None = None) -> SparkSession:
    """Get or create a session; ``master`` is ignored under spark-submit, which sets it."""
    from pyspark.sql import SparkSession

    # Executors must run the same interpreter as the driver (numpy, pyarrow).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", driver_memory)
    )
    if master:
        builder = builder.master(master)
    if shuffle_partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    logger.info("Spark %s session on %s", session.version, session.sparkContext.master)
    return session


def stop_with_jvm(session: SparkSession, timeout: float = 60.0) -> None:
    """Stop ``session`` and end the JVM it ran in, so that its memory goes back to the
    machine; the next session starts a JVM of its own. (``SparkSession.stop`` alone
    keeps the JVM, and all the heap it grew, for the next session in this process.)"""
    import subprocess

    from pyspark import SparkContext

    session.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return
    jvm = getattr(gateway, "proc", None)
    gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if jvm is None:
        return
    jvm.terminate()
    try:
        jvm.wait(timeout)
    except subprocess.TimeoutExpired:
        logger.warning("Spark's JVM (pid %d) did not stop within %gs; killing it",
                       jvm.pid, timeout)
        jvm.kill()
        jvm.wait()
    logger.info("Spark's JVM (pid %d) ended", jvm.pid)
