"""BI readers of every isolation level across many switches and cleanups, and a long BI
transaction that holds its locks through them."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta

import psycopg2
from psycopg2 import errors
from psycopg2.extensions import (
    ISOLATION_LEVEL_READ_COMMITTED,
    ISOLATION_LEVEL_REPEATABLE_READ,
    ISOLATION_LEVEL_SERIALIZABLE,
)

from jobs.publish.postgres import LOCK_TIMEOUT_MS
from tests.faults import checks
from tests.faults.publisher import publish

FIRST_DAY = date(2026, 9, 1)
# Enough switches for every reader to see several versions come and go, and for cleanup
# to drop partitions (7 kept besides the served one) while they read.
SWITCHES = 15
# Each reader must have read at least this often while the switches ran.
MIN_READS = 10
LEVELS = {"read committed": ISOLATION_LEVEL_READ_COMMITTED,
          "repeatable read": ISOLATION_LEVEL_REPEATABLE_READ,
          "serializable": ISOLATION_LEVEL_SERIALIZABLE}
# No reader may wait longer than the lock timeout; this much more is scheduling noise.
READER_SLACK_SECONDS = 1.0
# A switch, its cleanup included, while a long BI transaction holds its locks.
SWITCH_BOUND_SECONDS = 20.0
QUERY = "SELECT user_id, rank, item_id FROM bi.recommendations"


class Reader(threading.Thread):
    """Reads bi.recommendations in a loop at one isolation level, twice per transaction
    where the level promises a stable snapshot, until told to stop (or a bound)."""

    def __init__(self, url: str, level: str, stop: threading.Event,
                 max_seconds: float = 300) -> None:
        super().__init__(name=f"reader {level}", daemon=True)
        self.url, self.level, self.stop, self.max_seconds = url, level, stop, max_seconds
        self.reads = 0
        self.tags: set[int] = set()
        self.longest = 0.0
        self.failures: list[str] = []

    def run(self) -> None:
        try:
            self.read_until_stopped()
        except Exception as err:  # any other error ends the thread: record it, not lose it
            self.failures.append(f"{self.level}: {type(err).__name__}: {err}")

    def read_until_stopped(self) -> None:
        connection = psycopg2.connect(self.url)
        connection.set_session(isolation_level=LEVELS[self.level], readonly=True)
        deadline = time.monotonic() + self.max_seconds
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    self.read_once(connection)
                except errors.SerializationFailure:
                    connection.rollback()  # a retry, not a wrong answer
                except checks.PartialReadError as err:
                    self.failures.append(str(err))
                    connection.rollback()
        finally:
            connection.close()

    def read_once(self, connection) -> None:
        with connection.cursor() as cur:
            start = time.monotonic()
            cur.execute(QUERY)
            first = cur.fetchall()
            self.longest = max(self.longest, time.monotonic() - start)
            tag = checks.whole_rows(first)
            if self.level != "read committed":
                cur.execute(QUERY)
                if sorted(cur.fetchall()) != sorted(first):
                    raise checks.PartialReadError(
                        f"{self.level}: two reads in one transaction differ")
        connection.commit()
        self.reads += 1
        self.tags.add(tag)


def start_readers(url: str, levels: list[str]) -> tuple[list[Reader], threading.Event]:
    stop = threading.Event()
    readers = [Reader(url, level, stop) for level in levels]
    for reader in readers:
        reader.start()
    return readers, stop


def stop_readers(readers: list[Reader], stop: threading.Event) -> None:
    stop.set()
    for reader in readers:
        reader.join(timeout=60)
        assert not reader.is_alive()
    checks.TALLY["postgres readers"] += len(readers)
    checks.TALLY["postgres reads"] += sum(reader.reads for reader in readers)


def test_readers_of_every_isolation_level_see_whole_versions_across_switches(
        target, engine) -> None:
    publish(target, FIRST_DAY, tag=1)
    readers, stop = start_readers(target.database_url, ["read committed", "read committed",
                                                        "repeatable read", "serializable"])
    try:
        for number in range(1, SWITCHES + 1):
            publish(target, FIRST_DAY + timedelta(days=number), tag=1 + number)
        checks.TALLY["switches"] += SWITCHES
    finally:
        stop_readers(readers, stop)
    assert [reader.failures for reader in readers] == [[]] * len(readers)
    assert all(reader.reads >= MIN_READS for reader in readers), [r.reads for r in readers]
    # They saw the versions change, and cleanup dropped old partitions meanwhile.
    assert all(len(reader.tags) >= 3 for reader in readers), [r.tags for r in readers]
    with engine.connect() as conn:
        dropped = conn.exec_driver_sql(
            "SELECT count(*) FROM batchscore.prediction_versions WHERE status = 'dropped'"
        ).scalar()
    # All but the served version and the 7 kept besides it, give or take a drop a reader's
    # lock put off to the next switch.
    assert dropped >= SWITCHES + 1 - 8 - 2
    checks.TALLY["partitions dropped"] += dropped


def test_a_long_bi_transaction_stalls_neither_switches_nor_readers(target, engine) -> None:
    for number in range(10):  # more versions than kept, so each switch has one to drop
        publish(target, FIRST_DAY + timedelta(days=number), tag=1 + number)
    long_query = psycopg2.connect(target.database_url)
    long_query.set_session(isolation_level=ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
    with long_query.cursor() as cur:
        cur.execute(QUERY)  # holds ACCESS SHARE on the table and its partitions until commit
        seen = sorted(cur.fetchall())
    readers, stop = start_readers(target.database_url, ["read committed", "read committed",
                                                        "repeatable read", "serializable"])
    try:
        for number in range(10, 13):
            start = time.monotonic()
            publish(target, FIRST_DAY + timedelta(days=number), tag=1 + number)
            took = time.monotonic() - start
            assert took < SWITCH_BOUND_SECONDS, f"a switch took {took:.1f}s"
            checks.TALLY["switches"] += 1
            assert checks.postgres_serves_whole(engine) == 1 + number
    finally:
        stop_readers(readers, stop)
    with long_query.cursor() as cur:
        cur.execute(QUERY)
        assert sorted(cur.fetchall()) == seen  # its snapshot's version, still whole
    long_query.commit()
    long_query.close()
    assert [reader.failures for reader in readers] == [[]] * len(readers)
    assert all(reader.reads >= MIN_READS for reader in readers), [r.reads for r in readers]
    longest = max(reader.longest for reader in readers)
    assert longest < LOCK_TIMEOUT_MS / 1000 + READER_SLACK_SECONDS, f"a reader waited {longest}s"
    # What the long query kept from being dropped goes at the next switch.
    with engine.connect() as conn:
        kept_before = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_inherits"
            " WHERE inhparent = 'batchscore.prediction_lists'::regclass").scalar()
    publish(target, FIRST_DAY + timedelta(days=13), tag=14)
    with engine.connect() as conn:
        kept_after = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_inherits"
            " WHERE inhparent = 'batchscore.prediction_lists'::regclass").scalar()
    assert kept_before > kept_after == 8  # the served version and the 7 kept besides it

