"""The scoring tasks write their lists themselves: a file appears under its final name
only once its task has written every batch, and a failed job leaves none."""

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from jobs.scoring.output import ATTEMPTS_DIR, write_scored

pytestmark = pytest.mark.spark


def doubled(fail_at: int | None = None):
    def scorer(batches):
        seen = 0
        for batch in batches:
            seen += batch.num_rows
            if fail_at is not None and seen >= fail_at:
                raise RuntimeError("the scorer failed half way")
            yield pa.RecordBatch.from_pydict(
                {"user_id": batch.column("user_id"),
                 "twice": pa.compute.multiply(batch.column("user_id"), 2)})
    return scorer


def test_each_task_writes_its_own_file_under_its_final_name(spark, tmp_path: Path) -> None:
    users = spark.range(1, 101).withColumnRenamed("id", "user_id").repartition(3)
    written = write_scored(users, doubled(), tmp_path, "model")
    assert written == [f"part-model-0000{number}.parquet" for number in range(3)]
    assert sorted(path.name for path in tmp_path.iterdir()) == written
    table = ds.dataset(str(tmp_path), format="parquet").to_table().to_pydict()
    assert sorted(zip(table["user_id"], table["twice"], strict=True)) == [
        (user, 2 * user) for user in range(1, 101)]


def test_a_failed_job_leaves_no_file_under_a_final_name(spark, tmp_path: Path) -> None:
    users = spark.range(1, 101).withColumnRenamed("id", "user_id").coalesce(1)
    # Spark hands the task its rows in one batch here: fail on a later batch's row
    # by making batches of 10 rows.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "10")
    try:
        with pytest.raises(Exception, match="the scorer failed half way"):
            write_scored(users, doubled(fail_at=55), tmp_path, "model")
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    # Five batches were written to the attempt's file, which readers skip.
    assert [path.name for path in tmp_path.iterdir()] == [ATTEMPTS_DIR]
    assert ds.dataset(str(tmp_path), format="parquet").to_table().num_rows == 0
    # The next run replaces the leftovers.
    assert write_scored(users, doubled(), tmp_path, "model") == ["part-model-00000.parquet"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["part-model-00000.parquet"]
    assert ds.dataset(str(tmp_path), format="parquet").to_table().num_rows == 100
