"""The run report against real PostgreSQL rows: what it gathers, what it says where there is
no data, and that a report that cannot be written leaves the run alone."""

from __future__ import annotations

import json
import logging
import re
from datetime import date

import pytest
import sqlalchemy as sa

from jobs.monitoring import report
from jobs.monitoring.thresholds import levels
from jobs.platform import runs
from tests import report_world
from tests.report_world import DAYS, LEVELS


def test_the_report_gathers_the_run_its_version_and_the_last_runs(engine, redis_client,
                                                                  tmp_path) -> None:
    world = report_world.build(engine, redis_client)
    newest, (p1, p2, p3) = world.run_ids[2], world.publish_ids
    data = report.gather(engine, newest, levels(LEVELS))

    assert data.version is not None
    assert (data.version["publish_id"], data.version["users"], data.version["rows"]) == (p3, 4, 8)
    assert data.history == list(zip(world.run_ids, DAYS, strict=True))
    assert data.trends[("input.rows", "")].points == (
        (DAYS[0], 1000.0), (DAYS[1], 1100.0), (DAYS[2], 1200.0))
    # The drift 0.2 is above its warn level 0.1, not its retrain level 0.25; the share
    # 0.7 is below its warn level 0.8, not its retrain level 0.6.
    assert [(c.metric, c.segment, c.level, c.threshold) for c in data.crossed] == [
        ("input.item_popularity_psi", "vs_training", "warn", 0.1),
        ("realized.ndcg_share", "model:1", "warn", 0.8)]
    # Each version's quality as last measured: the first version's 0.12, not the 0.10
    # of the day before.
    assert [(r.served_by, r.publish_id, r.published_for, r.value) for r in data.realized] == [
        ("model 1", p1, DAYS[0], 0.12), ("model 1", p2, DAYS[1], 0.11),
        ("popularity", p1, DAYS[0], 0.08), ("popularity", p2, DAYS[1], 0.09)]
    assert data.top_items == [
        {"item_id": 10, "title": "Heat", "users": 4, "mean_rank": 1.25},
        {"item_id": 11, "title": "Ran", "users": 2, "mean_rank": 2.0},
        {"item_id": 12, "title": None, "users": 1, "mean_rank": 2.0},
        {"item_id": 13, "title": None, "users": 1, "mean_rank": 1.0}]
    scores = data.scores
    assert scores is not None and scores.previous_publish_id == p2
    assert (sum(scores.counts), sum(scores.previous_counts or ())) == (8, 6)
    # The bins span both versions' scores: 0.1 (this one) to 1.0 (this one), 0.2..0.9 before.
    assert scores.edges[0] == pytest.approx(0.1, abs=1e-5)
    assert scores.edges[-1] == pytest.approx(1.0, abs=1e-5)
    assert scores.counts[0] == 1 and scores.counts[-1] == 1
    assert scores.sampled_every == 1
    assert data.model_gates["checks"][0]["name"] == "beats_popularity"


def test_the_most_recommended_items_come_from_the_stored_counts_or_the_lists(
        engine, redis_client) -> None:
    world = report_world.build(engine, redis_client)
    newest = world.publish_ids[2]
    expected = [{"item_id": 10, "title": "Heat", "users": 4, "mean_rank": 1.25},
                {"item_id": 11, "title": "Ran", "users": 2, "mean_rank": 2.0}]
    # What the publisher counted as it loaded the newest lists: item 10 at ranks 1, 1, 1
    # and 2; 11 at 2 and 2; 12 at 2; 13 at 1.
    with engine.begin() as conn:
        stored = conn.execute(sa.text(
            "SELECT item_id, users, rank_sum FROM batchscore.prediction_item_exposure"
            " WHERE publish_id = :p ORDER BY item_id"), {"p": newest}).all()
        assert [tuple(row) for row in stored] == [(10, 4, 5), (11, 2, 4), (12, 1, 2), (13, 1, 1)]
        # Make one item's stored count differ from its lists: the report reads the counts.
        conn.execute(sa.text("UPDATE batchscore.prediction_item_exposure SET users = 9,"
                             " rank_sum = 18 WHERE publish_id = :p AND item_id = 11"),
                     {"p": newest})
    assert report.most_recommended(engine, newest, limit=2) == [
        {"item_id": 11, "title": "Ran", "users": 9, "mean_rank": 2.0}, expected[0]]
    # A version loaded by an earlier release has no counts: they come from its lists.
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM batchscore.prediction_item_exposure"
                             " WHERE publish_id = :p"), {"p": newest})
    assert report.most_recommended(engine, newest, limit=2) == expected


def test_the_score_histogram_counts_the_monitors_sample_of_users(engine, redis_client) -> None:
    world = report_world.build(engine, redis_client)
    _, previous, newest = world.publish_ids
    # 4 users over a sample of 2: every other user id, 2 and 4. This version: user 2's
    # 0.9 and 0.1, user 4's 0.8 and 0.7; the previous one: user 2's 0.9 and 0.3.
    scores = report.score_histogram(engine, newest, DAYS[2], sample_users=2)
    assert scores is not None and scores.sampled_every == 2
    assert scores.previous_publish_id == previous
    assert (sum(scores.counts), sum(scores.previous_counts or ())) == (4, 2)
    assert scores.edges[0] == pytest.approx(0.1, abs=1e-5)
    assert scores.edges[-1] == pytest.approx(0.9, abs=1e-5)
    assert scores.counts[0] == 1 and scores.counts[-1] == 1
    assert scores.previous_counts is not None and scores.previous_counts[-1] == 1


def test_the_report_page_and_the_index_are_written_and_recorded(engine, redis_client,
                                                                tmp_path) -> None:
    world = report_world.build(engine, redis_client)
    newest = world.run_ids[2]
    path = report.write_report(engine, tmp_path, newest, LEVELS)

    assert path == tmp_path / "reports" / f"{newest}.html"
    page = path.read_text()
    # Every plot is an inline SVG, and the page refuses any fetch.
    assert page.count("<svg") == 8
    assert "default-src 'none'" in page
    assert not re.search(r"(src|href)=\"https?:", page)
    # The levels are drawn across their metric's plot, each line named in the SVG.
    for line in ("input.item_popularity_psi-warn", "input.item_popularity_psi-retrain",
                 "realized.ndcg_share-warn", "realized.ndcg_share-retrain"):
        assert page.count(f'id="level-{line}"') == 1, line
    assert 'id="level-input.rows-warn"' not in page
    assert f'href="file:///docs/{newest}/input.html"' in page
    assert "Heat" in page and "No realized quality" not in page
    assert runs.get(engine, newest).stats["report"] == str(path)

    index = (tmp_path / "reports" / "index.html").read_text()
    # Newest first; only the run that has a report is linked.
    assert index.index(newest) < index.index(world.run_ids[0])
    assert f'<a href="{newest}.html">' in index
    assert f'<a href="{world.run_ids[0]}.html">' not in index
    assert "1,200" not in index and ">400<" in index
    # The levels each run's metrics cross: drift 0.2 and share 0.7, drift 0.15, none.
    assert re.findall(r'<td class="warn">([^<]*)</td>', index) == ["2 warn", "1 warn", ""]


def x_dates(svg: str) -> list[str]:
    """The x-axis tick labels one plot's SVG draws (matplotlib keeps each drawn text as a
    comment beside its paths)."""
    return [re.search(r"<!-- ([^>]*) -->", tick)[1] for tick in svg.split('<g id="xtick_')[1:]]


def plots(page: str) -> dict[str, str]:
    """Each plot's caption and its SVG."""
    return dict(re.findall(r"<figcaption>([^<]*)</figcaption>(<svg.*?</svg>)", page, re.S))


def test_tiles_and_the_since_line_say_what_their_labels_say(engine, redis_client,
                                                            tmp_path) -> None:
    world = report_world.build(engine, redis_client)
    page = report.write_report(engine, tmp_path, world.run_ids[2], LEVELS).read_text()
    tiles = [re.sub(r"<[^>]+>", " ", tile).split() for tile in
             re.findall(r'<div class="headline">(.*?)\n</div>', page, re.S)[0].split("\n")
             if "<div>" in tile]
    # The newest lists: 4 users, 2 items each; items 10, 11, 12 and 13 of the 8.
    assert [" ".join(tile) for tile in tiles] == [
        f"version {world.publish_ids[2]} published", "model 1", "users 4 top 2 each",
        "rows 8", "input rows 400 1 quarantined", "catalogue coverage 50.0% 4 of 8 items"]
    # The day before: 3 users, items 10, 11 and 12 (37.5%); its drift 0.15 crossed one
    # warn level, this run's two.
    since = re.search(r'<p class="since">([^<]*)</p>', page)[1]
    assert since == (f"Since the previous run (2026-11-19): model 1, version "
                     f"{world.publish_ids[1]} -&gt; {world.publish_ids[2]}; users 4 (+1);"
                     " coverage 50.0% (+12.5 pts); levels crossed 2 (was 1).")


def test_date_axes_tick_the_run_dates_only(engine, redis_client, tmp_path) -> None:
    # A first run: one point, one tick, its own date.
    run_id, _ = report_world.publish(engine, redis_client, register_model(engine), DAYS[0],
                                     report_world.LISTS[0])
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO batchscore.run_metrics (run_id, metric, segment,"
                             " value) VALUES (:r, 'input.rows', '', 100)"), {"r": run_id})
    first = report.write_report(engine, tmp_path, run_id, {}).read_text()
    assert x_dates(plots(first)["Input rows"]) == ["11-18"]
    assert "First run in this history" in first


def test_fourteen_nights_tick_every_other_date_and_the_last(engine, tmp_path) -> None:
    # At most 8 ticks: every other date, the last one always.
    fortnight = report_world.nights(engine, date(2026, 12, 1), 14)
    page = report.write_report(engine, tmp_path, fortnight[-1], {}).read_text()
    assert x_dates(plots(page)["Input rows"]) == [
        f"12-{day:02d}" for day in (1, 3, 5, 7, 9, 11, 13, 14)]
    assert "Since the previous run (2026-12-13)" in page


def test_the_three_run_world_ticks_its_three_dates(engine, redis_client, tmp_path) -> None:
    world = report_world.build(engine, redis_client)
    drawn = plots(report.write_report(engine, tmp_path, world.run_ids[2], LEVELS).read_text())
    assert x_dates(drawn["Input rows"]) == ["11-18", "11-19", "11-20"]
    # Realized quality by the published versions' dates: the first two.
    assert x_dates(drawn["Realized NDCG by published date"]) == ["11-18", "11-19"]


def test_a_first_run_says_what_it_has_no_data_for(engine, redis_client, tmp_path) -> None:
    run_id, _ = report_world.publish(engine, redis_client, register_model(engine), DAYS[0],
                                     report_world.LISTS[0])
    page = report.write_report(engine, tmp_path, run_id, {}).read_text()

    for sentence in ("No input metrics recorded yet", "No realized quality measured yet",
                     "No monitoring levels are set"):
        assert sentence in page
    # Drawn from the kept predictions alone: the score distribution and the top items.
    assert page.count("<svg") == 2 and 'id="level-' not in page
    assert "previous (" not in page


def test_the_newest_run_is_the_default_and_an_unknown_run_is_named(engine, redis_client,
                                                                   tmp_path) -> None:
    with pytest.raises(report.ReportError, match="no nightly run yet"):
        report.write_report(engine, tmp_path, None, {})
    world = report_world.build(engine, redis_client)
    assert report.write_report(engine, tmp_path, None, {}).name == f"{world.run_ids[2]}.html"
    with pytest.raises(report.ReportError, match="there is no run 'nightly-nope'"):
        report.write_report(engine, tmp_path, "nightly-nope", {})


def test_a_report_that_cannot_be_written_is_logged_and_the_run_stands(
        engine, redis_client, tmp_path, caplog) -> None:
    run_id, _ = report_world.publish(engine, redis_client, register_model(engine), DAYS[0],
                                     report_world.LISTS[0])
    (tmp_path / "reports").write_text("a file where the reports folder should be")
    with caplog.at_level(logging.ERROR, logger="jobs.monitoring.report"):
        assert report.write_report_logged(engine, tmp_path, run_id) is None
    assert f"run {run_id}: its report could not be written" in caplog.text
    run = runs.get(engine, run_id)
    assert run.status == "succeeded" and "report" not in run.stats
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM batchscore.prediction_versions"
                                    " WHERE status = 'published'")).scalar() == 1


def test_a_failed_run_is_reported_with_its_error(engine, tmp_path) -> None:
    model = register_model(engine)
    run_id = runs.start(engine, "nightly", date(2026, 11, 18), model)
    runs.fail(engine, run_id, "ContractError: input contract failed: 3 expectation(s) failed",
              {"data_docs": {"input": "file:///docs/failed/input.html"}})
    page = report.write_report(engine, tmp_path, run_id, {}).read_text()
    assert "input contract failed: 3 expectation(s) failed" in page
    assert "Nothing was published by this run." in page
    assert 'href="file:///docs/failed/input.html"' in page
    assert json.loads(json.dumps(runs.get(engine, run_id).to_json()))["stats"]["report"]


def register_model(engine) -> int:
    from jobs.lifecycle.registry import NewModel, register

    return register(engine, NewModel(
        created_by="test", trained_as_of=date(2026, 11, 17), params={}, metrics={},
        data_snapshot={}, code_version="test", artifact_uri="file:///nowhere")).version
