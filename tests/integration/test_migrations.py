import hashlib
import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs.platform.db import (
    CHECKSUMS_BEFORE_TEMPLATES,
    Migration,
    MigrationError,
    applied_migrations,
    migrations,
    upgrade,
)
from jobs.platform.names import Names
from tests.conftest import reset_database


def copy_migrations(folder: Path) -> Path:
    for migration in migrations():
        shutil.copyfile(migration.path, folder / migration.path.name)
    return folder


LAST_BEFORE_YOYO = "007_publish_protocol"


def migrate_the_old_way(engine: sa.engine.Engine, applied: list[Migration]) -> None:
    """Migrate as the hand-written runner before yoyo did: each file's SQL, then its checksum."""
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS batchscore"))
        conn.execute(sa.text(
            "CREATE TABLE IF NOT EXISTS batchscore.schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ))
        for migration in applied:
            # The file composed with the default names (the runner ran plain SQL, which
            # the file was then); without parameters, so a % (009's format()) is itself.
            raw = conn.connection.driver_connection
            raw.cursor().execute(Names().compose(migration.path.read_text()).as_string(raw))
            conn.execute(
                sa.text("INSERT INTO batchscore.schema_migrations (version, checksum)"
                        " VALUES (:v, :c)"),
                {"v": migration.version,
                 "c": hashlib.sha256(migration.path.read_bytes()).hexdigest()},
            )


def yoyo_marked(engine: sa.engine.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT migration_id FROM batchscore._yoyo_migration ORDER BY migration_id"
        )).scalars())


def test_upgrade_is_idempotent_and_recorded(engine) -> None:
    # The fixture already upgraded once.
    assert upgrade(engine) == []
    assert applied_migrations(engine) == [m.version for m in migrations()]


def test_yoyo_keeps_its_record_in_the_batchscore_schema(engine) -> None:
    with engine.connect() as conn:
        yoyo_tables = set(conn.execute(sa.text(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_name LIKE '%yoyo%'"
        )).all())
        bi_tables = conn.execute(sa.text(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = 'bi' AND table_type = 'BASE TABLE'"
        )).scalar_one()
    assert yoyo_tables == {("batchscore", name) for name in
                           ("_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock")}
    assert bi_tables == 0
    assert yoyo_marked(engine) == [m.version for m in migrations()]


def test_the_bi_contract_exists(engine) -> None:
    with engine.connect() as conn:
        views = set(conn.execute(sa.text(
            "SELECT table_name FROM information_schema.views WHERE table_schema = 'bi'"
        )).scalars())
        columns = list(conn.execute(sa.text(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'bi' AND table_name = 'recommendations'"
            " ORDER BY ordinal_position"
        )).scalars())
        can_read = conn.execute(sa.text(
            "SELECT has_table_privilege('batchscore_bi', 'bi.recommendations', 'SELECT')"
        )).scalar()
        cannot_read_base = conn.execute(sa.text(
            "SELECT has_table_privilege('batchscore_bi', 'batchscore.interactions', 'SELECT')"
        )).scalar()
    assert {"recommendations", "recommendations_history", "popular_items",
            "prediction_versions", "runs", "model_versions"} <= views
    assert columns == ["user_id", "rank", "item_id", "score", "run_id", "model_version",
                       "logical_date"]
    assert can_read and not cannot_read_base


def test_an_edited_applied_migration_is_refused(engine, tmp_path: Path) -> None:
    copy_migrations(tmp_path)
    edited = tmp_path / migrations()[0].path.name
    edited.write_text(edited.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="001_core was changed after it was applied"):
        upgrade(engine, tmp_path)


def test_a_new_migration_is_applied_once(engine, tmp_path: Path) -> None:
    copy_migrations(tmp_path)
    (tmp_path / "999_extra.sql").write_text("CREATE TABLE batchscore.extra (n int);")
    assert upgrade(engine, tmp_path) == ["999_extra"]
    assert upgrade(engine, tmp_path) == []


def test_a_failing_migration_leaves_the_database_as_it_was(engine, tmp_path: Path) -> None:
    copy_migrations(tmp_path)
    (tmp_path / "998_fine.sql").write_text("CREATE TABLE batchscore.fine (n int);")
    (tmp_path / "999_broken.sql").write_text(
        "CREATE TABLE batchscore.broken (n int);\nINSERT INTO batchscore.nowhere VALUES (1);"
    )
    with pytest.raises(MigrationError, match="migration 999_broken failed"):
        upgrade(engine, tmp_path)
    with engine.connect() as conn:
        fine = conn.execute(sa.text("SELECT to_regclass('batchscore.fine')")).scalar()
    assert fine is None
    assert applied_migrations(engine) == [m.version for m in migrations()]
    assert yoyo_marked(engine) == [m.version for m in migrations()]


def test_a_comment_after_the_last_statement_is_refused(engine, tmp_path: Path) -> None:
    copy_migrations(tmp_path)
    (tmp_path / "999_extra.sql").write_text(
        "CREATE TABLE batchscore.extra (n int);\n-- a note at the end\n"
    )
    with pytest.raises(MigrationError, match="999_extra ends with a comment"):
        upgrade(engine, tmp_path)


def test_a_database_migrated_before_yoyo_is_upgraded_in_place(engine) -> None:
    reset_database(engine)
    # The hand-written runner applied migrations up to 007; yoyo every one since.
    earlier = [m for m in migrations() if m.version <= LAST_BEFORE_YOYO]
    later = [m for m in migrations() if m.version > LAST_BEFORE_YOYO]
    migrate_the_old_way(engine, earlier)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO batchscore.items (item_id, title) VALUES (7, 'kept')"))
        conn.execute(sa.text(
            "INSERT INTO batchscore.runs (run_id, kind, logical_date, status, started_by,"
            " code_version) VALUES ('r1', 'nightly', '2026-11-20', 'succeeded', 'test', 'x')"
        ))

    assert upgrade(engine) == [m.version for m in later]

    with engine.connect() as conn:
        title = conn.execute(sa.text(
            "SELECT title FROM batchscore.items WHERE item_id = 7"
        )).scalar_one()
        run = conn.execute(sa.text(
            "SELECT run_id, lease_seconds FROM batchscore.runs"
        )).one()
        logged = dict(conn.execute(sa.text(
            "SELECT migration_id, operation FROM batchscore._yoyo_log"
        )).all())
    assert title == "kept"
    assert tuple(run) == ("r1", 0)  # kept through every migration yoyo applied
    assert logged == {**{m.version: "mark" for m in earlier},
                      **{m.version: "apply" for m in later}}
    assert yoyo_marked(engine) == applied_migrations(engine) == [m.version for m in migrations()]
    assert upgrade(engine) == []


def test_checksums_recorded_before_the_migrations_were_templates_are_accepted(engine) -> None:
    reset_database(engine)
    upgrade(engine)
    before = json.loads(CHECKSUMS_BEFORE_TEMPLATES.read_text())
    assert sorted(before) == [m.version for m in migrations()][:15]
    with engine.begin() as conn:
        for version, checksum in before.items():
            conn.execute(sa.text("UPDATE batchscore.schema_migrations SET checksum = :c"
                                 " WHERE version = :v"), {"c": checksum, "v": version})

    assert upgrade(engine) == []

    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE batchscore.schema_migrations SET checksum = :c"
                             " WHERE version = '003_bi'"), {"c": before["002_predictions"]})
    with pytest.raises(MigrationError, match="003_bi was changed after it was applied"):
        upgrade(engine)


def test_a_database_migrated_before_yoyo_is_verified_before_it_is_marked(
        engine, tmp_path: Path) -> None:
    reset_database(engine)
    migrate_the_old_way(engine, migrations()[:-1])
    copy_migrations(tmp_path)
    edited = tmp_path / migrations()[1].path.name
    edited.write_text(edited.read_text() + "\n-- edited\n")

    with pytest.raises(MigrationError, match="002_predictions was changed after it was applied"):
        upgrade(engine, tmp_path)

    assert yoyo_marked(engine) == []
    assert applied_migrations(engine) == [m.version for m in migrations()[:-1]]


def test_concurrent_upgrades_of_a_fresh_database_apply_each_migration_once(
        engine, tmp_path: Path) -> None:
    reset_database(engine)
    copy_migrations(tmp_path)
    # Slow enough that the second upgrade starts while the first is still applying.
    (tmp_path / "999_slow.sql").write_text("DO $$ BEGIN PERFORM pg_sleep(1.5); END $$;")
    start = threading.Barrier(2)

    def run() -> list[str]:
        start.wait()
        return upgrade(engine, tmp_path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [future.result() for future in [pool.submit(run) for _ in range(2)]]

    versions = [m.version for m in migrations(tmp_path)]
    assert sorted(results, key=len) == [[], versions]
    with engine.connect() as conn:
        applies = list(conn.execute(sa.text(
            "SELECT migration_id FROM batchscore._yoyo_log WHERE operation = 'apply'"
            " ORDER BY migration_id"
        )).scalars())
    assert applies == yoyo_marked(engine) == applied_migrations(engine) == versions
