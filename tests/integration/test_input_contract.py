"""The input contract on the embedded database: the sample data passes it."""

from datetime import date, timedelta

from jobs.contracts.engine import Validator
from jobs.contracts.inputs import check_input, table_batch
from jobs.data.generate import GenerateConfig, generate, write_generated
from jobs.data.store import copy_interactions
from jobs.orchestration.quickstart import SAMPLE

END = date(2026, 11, 20)


def test_every_day_of_the_sample_data_passes(engine, tmp_path) -> None:
    with write_generated(generate(GenerateConfig(**SAMPLE, end_date=END))) as rows:
        copy_interactions(engine, rows)
    validator = Validator(tmp_path)
    for back in range(7):
        day = END - timedelta(days=back)
        batch = table_batch(engine, day)
        outcome = check_input(validator, engine, day, batch)
        assert outcome.report.success, [f.describe() for f in outcome.report.failures]
        assert outcome.rejected == {}
        assert len(batch.frame) > 500  # 60 days of sample data: about 900 events a day


def test_table_defects_are_quarantined_by_moving_the_rows(engine, tmp_path) -> None:
    import sqlalchemy as sa

    from jobs.contracts.inputs import quarantine_and_load
    from jobs.platform import runs

    with write_generated(generate(GenerateConfig(**SAMPLE, end_date=END))) as rows:
        copy_interactions(engine, rows)
    with engine.begin() as conn:
        event_id = conn.execute(sa.text(
            "UPDATE batchscore.interactions SET rating = 50 WHERE event_id ="
            " (SELECT min(event_id) FROM batchscore.interactions WHERE event_at >= :d)"
            " RETURNING event_id"), {"d": END}).scalar()
        before = conn.execute(sa.text("SELECT count(*) FROM batchscore.interactions")).scalar()
    batch = table_batch(engine, END)
    outcome = check_input(Validator(tmp_path), engine, END, batch)
    assert outcome.rejected == {
        event_id: ["rating within the configured range (rating_min..rating_max)"]}
    run_id = runs.start(engine, "nightly", END, None)
    assert quarantine_and_load(engine, run_id, END, batch, outcome) == {"loaded": 0,
                                                                         "rejected": 1}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM batchscore.interactions")
                            ).scalar() == before - 1
        row = conn.execute(sa.text("SELECT row_number, row, reasons FROM batchscore.rejects")
                           ).one()
    assert row.row_number == event_id and row.row["rating"] == 50.0
    assert row.reasons == ["rating within the configured range (rating_min..rating_max)"]


def test_a_files_accepted_rows_are_loaded_with_a_progress_line(engine, tmp_path,
                                                               caplog) -> None:
    import logging
    from datetime import UTC, datetime

    from jobs.contracts.inputs import quarantine_and_load, read_input_file
    from jobs.platform import runs

    noon = int(datetime(END.year, END.month, END.day, 12, tzinfo=UTC).timestamp())
    lines = [f"{user},{item},3,{noon + user}" for user in range(1, 11) for item in (7, 8)]
    path = tmp_path / "day.csv"
    path.write_text("user_id,item_id,rating,timestamp\n" + "\n".join(lines) + "\n")
    batch = read_input_file(path)
    outcome = check_input(Validator(tmp_path), engine, END, batch)
    assert outcome.rejected == {}
    run_id = runs.start(engine, "nightly", END, None)
    with caplog.at_level(logging.INFO, logger="jobs.platform.progress"):
        assert quarantine_and_load(engine, run_id, END, batch, outcome) == {"loaded": 20,
                                                                             "rejected": 0}
    assert [record.getMessage() for record in caplog.records
            if record.name == "jobs.platform.progress"] == [
        "loading the input: 20 / 20 rows sent"]
