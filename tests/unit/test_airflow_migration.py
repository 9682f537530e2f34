"""When the local Airflow's metadata database is migrated again: only when this release
has not migrated this home's own database (``airflow db migrate`` takes half a minute
even with nothing to do)."""

from __future__ import annotations

from jobs.orchestration.local_airflow import (
    MIGRATED_MARKER,
    mark_migrated,
    migration_stamp,
    needs_migration,
)


def test_a_home_needs_migrating_until_this_release_marked_its_database(tmp_path) -> None:
    env = {"AIRFLOW_HOME": str(tmp_path)}
    assert needs_migration(env)  # nothing there
    (tmp_path / "airflow.db").write_bytes(b"")
    assert needs_migration(env)  # a database nobody marked
    mark_migrated(env)
    assert not needs_migration(env)
    # Another Airflow release marked it: migrated again.
    marker = tmp_path / MIGRATED_MARKER
    marker.write_text(marker.read_text().replace("apache-airflow ", "apache-airflow 0.0.0+"))
    assert needs_migration(env)
    mark_migrated(env)
    # The database removed (a fresh one would be made): migrated again.
    (tmp_path / "airflow.db").unlink()
    assert needs_migration(env)


def test_a_database_set_by_url_is_always_migrated_and_its_url_is_not_kept(tmp_path) -> None:
    url = "postgresql://airflow:s3cret-pw@db:5432/airflow"
    env = {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url}
    (tmp_path / "airflow.db").write_bytes(b"")
    mark_migrated(env)
    assert needs_migration(env)
    assert "s3cret-pw" not in (tmp_path / MIGRATED_MARKER).read_text()
    assert migration_stamp(env) != migration_stamp({"AIRFLOW_HOME": str(tmp_path)})
