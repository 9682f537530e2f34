"""Ending a Spark session with its JVM, so that a long run's later steps get its memory
back: in a process of its own, so the suite's shared session is left alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os
    from pyspark import SparkContext
    from jobs.platform.spark import spark_session, stop_with_jvm

    first = spark_session("jvm-first", "local[1]", driver_memory="512m")
    assert first.range(7).count() == 7
    jvm = SparkContext._gateway.proc.pid
    assert "java" in open(f"/proc/{jvm}/cmdline").read()
    stop_with_jvm(first)
    print("first JVM alive after the stop:", os.path.exists(f"/proc/{jvm}"))
    second = spark_session("jvm-second", "local[1]", driver_memory="512m")
    print("second session counts", second.range(5).count(), "in a new JVM:",
          SparkContext._gateway.proc.pid != jvm)
    stop_with_jvm(second)
""")


@pytest.mark.spark
def test_stopping_with_the_jvm_ends_its_process_and_a_next_session_starts_a_new_one(
        ) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "first JVM alive after the stop: False" in lines
    assert "second session counts 5 in a new JVM: True" in lines
