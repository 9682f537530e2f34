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
