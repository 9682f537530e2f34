from pathlib import Path

import pytest
import sqlalchemy as sa

from jobs.platform.db import MigrationError, applied_migrations, migrations, upgrade


def test_upgrade_is_idempotent_and_recorded(engine) -> None:
    # The fixture already upgraded once.
    assert upgrade(engine) == []
    assert applied_migrations(engine) == [m.version for m in migrations()]


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
    for migration in migrations():
        (tmp_path / migration.path.name).write_text(migration.sql)
    edited = tmp_path / migrations()[0].path.name
    edited.write_text(edited.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="001_core was changed after it was applied"):
        upgrade(engine, tmp_path)


def test_a_new_migration_is_applied_once(engine, tmp_path: Path) -> None:
    for migration in migrations():
        (tmp_path / migration.path.name).write_text(migration.sql)
    (tmp_path / "999_extra.sql").write_text("CREATE TABLE batchscore.extra (n int);")
    assert upgrade(engine, tmp_path) == ["999_extra"]
    assert upgrade(engine, tmp_path) == []
