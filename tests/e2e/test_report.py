"""The run report in a real browser: Debian's headless Chromium, driven by Selenium through
chromium-driver, opens a report built from real database rows and finds no console error,
no request beyond the page itself, and every plot drawn.

Chromium missing fails the test, naming what to install; only
``BATCHSCORE_SKIP_BROWSER=1`` skips it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from jobs.monitoring import report
from tests import report_world
from tests.report_world import LEVELS

CHROMIUM = "chromium"
CHROMEDRIVER = "chromedriver"
# The world's plots: input rows and drift; score distribution and drift; realized NDCG and
# its share; coverage and the most recommended items.
PLOTS = 8


@dataclass(frozen=True)
class PageLoad:
    console_errors: list[str]
    requested: list[str]
    failed: list[str]
    plots: list[dict]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if os.environ.get("BATCHSCORE_SKIP_BROWSER") == "1":
        pytest.skip("BATCHSCORE_SKIP_BROWSER=1")
    binary, driver_path = shutil.which(CHROMIUM), shutil.which(CHROMEDRIVER)
    if binary is None or driver_path is None:
        pytest.fail(f"the report's browser test needs Debian's `{CHROMIUM}` and "
                    f"`{CHROMEDRIVER}` on PATH (apt-get install -y chromium chromium-driver, "
                    "as .ci/run does); set BATCHSCORE_SKIP_BROWSER=1 to skip it")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    # Named outright, so that Selenium never looks for (or downloads) a browser or driver.
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,2400"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # Chromium leaves its singleton socket's folder in TMPDIR: the test's own temporary one.
    temporary = str(tmp_path_factory.mktemp("browser"))
    driver = webdriver.Chrome(options=options, service=Service(
        executable_path=driver_path, env={**os.environ, "TMPDIR": temporary}))
    yield driver
    driver.quit()


def load(driver, page: Path) -> PageLoad:
    """Open ``page`` and collect what the browser logged while loading it."""
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(page.as_uri())
    plots = driver.execute_script(
        "return [...document.querySelectorAll('figure.plot')].map(figure => {"
        "  const svg = figure.querySelector('svg');"
        "  const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};"
        "  return {caption: figure.querySelector('figcaption').textContent,"
        "          width: box.width, height: box.height,"
        "          marks: svg ? svg.querySelectorAll('path, use').length : 0};"
        "});")
    events = [json.loads(entry["message"])["message"]
              for entry in driver.get_log("performance")]
    return PageLoad(
        console_errors=[entry["message"] for entry in driver.get_log("browser")
                        if entry["level"] == "SEVERE"],
        requested=[event["params"]["request"]["url"] for event in events
                   if event["method"] == "Network.requestWillBeSent"],
        failed=[event["params"].get("errorText", "") for event in events
                if event["method"] == "Network.loadingFailed"],
        plots=plots)


def test_the_report_loads_without_errors_fetches_nothing_and_draws_every_plot(
        engine, redis_client, tmp_path, browser) -> None:
    world = report_world.build(engine, redis_client)
    path = report.write_report(engine, tmp_path, world.run_ids[2], LEVELS)

    loaded = load(browser, path)

    assert loaded.console_errors == []
    assert loaded.requested == [path.as_uri()] and loaded.failed == []
    assert len(loaded.plots) == PLOTS
    for plot in loaded.plots:
        assert plot["width"] > 100 and plot["height"] > 50, plot
        assert plot["marks"] > 10, plot
    assert browser.title == f"batchscore run {world.run_ids[2]}"

    index = load(browser, report.index_path(tmp_path))
    assert index.console_errors == [] and index.requested == [
        report.index_path(tmp_path).as_uri()]
    links = [a.get_attribute("href") for a in browser.find_elements("css selector", "td a")]
    assert links == [path.as_uri()]


def test_the_check_sees_a_fetch_and_a_broken_plot(engine, redis_client, tmp_path,
                                                  browser) -> None:
    """The same checks fail on a page that tries to fetch an image and has an empty plot."""
    world = report_world.build(engine, redis_client)
    page = report.write_report(engine, tmp_path, world.run_ids[2], LEVELS).read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace(
        "<h2 id=\"published\">",
        '<img src="http://127.0.0.1:9/logo.png"><figure class="plot"><figcaption>empty'
        '</figcaption><svg></svg></figure><h2 id="published">', 1))

    loaded = load(browser, broken)

    # The page's policy refuses the image: a console error, and a request that failed.
    assert any("Content Security Policy" in error for error in loaded.console_errors)
    assert "http://127.0.0.1:9/logo.png" in loaded.requested and loaded.failed != []
    empty = [plot for plot in loaded.plots if plot["caption"] == "empty"]
    # An empty <svg> keeps a default box (300 x 150, scaled): what tells it apart from a
    # drawn plot is that it has no marks.
    assert [plot["marks"] for plot in empty] == [0]


def shown(driver, page: Path) -> dict:
    """What a person sees at the top of ``page`` in the browser, and how many date ticks
    the rendered input-rows plot draws."""
    loaded = load(driver, page)
    assert loaded.console_errors == [] and loaded.failed == []
    return driver.execute_script(
        "const tiles = [...document.querySelectorAll('.headline > div')];"
        "const plot = [...document.querySelectorAll('figure.plot')].find("
        "  figure => figure.querySelector('figcaption').textContent === 'Input rows');"
        "return {tiles: tiles.map(tile => tile.innerText.replace(/\\s+/g, ' ').trim()),"
        "        since: document.querySelector('p.since').innerText,"
        "        ticks: plot ? plot.querySelectorAll('g[id^=\"xtick_\"]').length : null};")


def test_a_first_a_second_and_a_fourteenth_night_read_right_in_the_browser(
        engine, redis_client, tmp_path, browser) -> None:
    model = report_world.build(engine, redis_client).model_version
    first_day = report_world.DAYS[0]
    with engine.connect() as conn:
        first, second = [r for r, in conn.exec_driver_sql(
            "SELECT run_id FROM batchscore.runs ORDER BY logical_date LIMIT 2")]
    one = shown(browser, report.write_report(engine, tmp_path, first, LEVELS))
    assert one["since"] == "First run in this history: nothing to compare with yet."
    # Day 1: 2 users, 2 items each; items 10, 11 and 12 of the 8.
    assert one["tiles"][2:] == ["users 2 top 2 each", "rows 4", "input rows 200 1 quarantined",
                                "catalogue coverage 37.5% 3 of 8 items"]
    assert one["ticks"] == 1
    two = shown(browser, report.write_report(engine, tmp_path, second, LEVELS))
    assert two["since"].startswith(f"Since the previous run ({first_day}): model {model},")
    assert "users 3 (+1); coverage 37.5% (+0.0 pts)" in two["since"]
    assert two["ticks"] == 2
    fortnight = report_world.nights(engine, date(2026, 12, 1), 14)
    last = shown(browser, report.write_report(engine, tmp_path, fortnight[-1], LEVELS))
    # The three world nights and fourteen more: 17 dates, every third ticked, and the last.
    assert last["ticks"] == 7
    assert last["since"].startswith("Since the previous run (2026-12-13)")
