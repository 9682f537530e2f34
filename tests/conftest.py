"""Fixtures shared by every tier: one local Spark session, one JVM with MLeap's runtime,
one pair of embedded servers, one pair of Debian's servers (PostgreSQL 15, Redis 7)
for the tests that run on both, and one Redis Cluster of Debian's Redis 7 (three
masters, a replica each)."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from jobs.bundles.mleap_runtime import MLEAP_RUNTIME_VERSION, MleapRuntime, MleapRuntimeError
from jobs.bundles.parity import ThreeWayReport, check_three_ways
from jobs.bundles.reader import load_bundle
from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.db import engine_for, upgrade
from jobs.platform.names import Names
from jobs.platform.redis_client import connect
from jobs.platform.services.debian import MissingServerError, debian_servers, require_redis_server
from jobs.platform.services.redis_cluster import LocalRedisCluster


@pytest.fixture(scope="session")
def spark():
    from jobs.platform.spark import spark_session

    session = spark_session("batchscore-tests", "local[1]", driver_memory="1g",
                            shuffle_partitions=1)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def mleap_runtime() -> Iterator[MleapRuntime]:
    """MLeap's JVM runtime, started once for the session and stopped at its end. A test
    that needs it fails, never skips, when Java or the built runtime is missing."""
    try:
        runtime = MleapRuntime().start()
    except MleapRuntimeError as err:
        pytest.fail(str(err), pytrace=False)
    yield runtime
    runtime.close()


# The user property under which a test records what its check measured, for the summary
# at the end of the session. Reports travel from pytest-xdist's workers with their user
# properties, so the summary sees every worker's tests.
THREE_WAY_PROPERTY = "three-way parity"
FAULT_TALLY_PROPERTY = "fault tally"


@pytest.fixture
def three_ways(request: pytest.FixtureRequest, mleap_runtime: MleapRuntime):
    """``check(bundle, spark_model, sample, columns=None)``: score the sample with Spark,
    MLeap's JVM runtime and the Python reader, fail on a pair that differs by more than
    1e-5, and keep the report for the session's summary."""

    def check(bundle: Path, spark_model, sample, columns=None) -> ThreeWayReport:
        report = check_three_ways(load_bundle(bundle), mleap_runtime.scorer(bundle),
                                  spark_model, sample, columns)
        request.node.user_properties.append((THREE_WAY_PROPERTY, (
            report.rows, report.python_vs_spark, report.jvm_vs_spark, report.python_vs_jvm,
            report.tolerance)))
        return report

    return check


def recorded(terminalreporter, name: str) -> list[tuple[str, object]]:
    """(test name, value) of each user property ``name`` the session's tests recorded."""
    found = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "teardown":
                continue
            test = report.nodeid.rsplit("::", 1)[-1]
            found += [(test, value) for key, value in report.user_properties if key == name]
    return found


def pytest_terminal_summary(terminalreporter) -> None:
    three_ways = recorded(terminalreporter, THREE_WAY_PROPERTY)
    if three_ways:
        terminalreporter.write_line(
            f"largest |diff| between Spark, MLeap {MLEAP_RUNTIME_VERSION}'s JVM runtime and "
            f"the Python reader, per exported bundle:")
        for name, (rows, python_spark, jvm_spark, python_jvm, bound) in sorted(three_ways):
            terminalreporter.write_line(
                f"  {name:<52} {rows:>3} rows  python-spark {python_spark:.3g}  "
                f"jvm-spark {jvm_spark:.3g}  python-jvm {python_jvm:.3g}  (bound {bound:g})")
    tally: Counter[str] = Counter()
    for _, counts in recorded(terminalreporter, FAULT_TALLY_PROPERTY):
        tally.update(counts)
    if tally:
        terminalreporter.write_line(
            "fault tier exercised: " + ", ".join(f"{count} {what}"
                                                 for what, count in sorted(tally.items())))


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Embedded servers under a fresh home, whatever the caller's environment says.

    Not under pytest's own temporary folder: every pytest session run as root
    makes that folder private again, which would cut the embedded PostgreSQL
    (run as its own user) off from its data while another session runs.
    """
    home = Path(tempfile.mkdtemp(prefix="batchscore-test-home-"))
    yield Settings.from_env({"BATCHSCORE_HOME": str(home)})
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def endpoints(settings: Settings) -> Iterator[services.Endpoints]:
    resolved = services.resolve(settings)
    yield resolved
    services.stop_embedded(settings)


@pytest.fixture
def engine(endpoints: services.Endpoints) -> Iterator[sa.engine.Engine]:
    """The embedded database, emptied and migrated afresh for each test."""
    engine = engine_for(endpoints.database_url)
    reset_database(engine)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def redis_admin(settings: Settings, endpoints: services.Endpoints) -> Iterator[redis.Redis]:
    """The embedded Redis's administrator; the server is emptied for each test."""
    client = connect(services.redis_url(settings, "admin"))
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def redis_client(endpoints: services.Endpoints, redis_admin: redis.Redis
                 ) -> Iterator[redis.Redis]:
    """The writer, as publishing connects: the default prefix's keys and publishing's
    commands only, so every test that publishes also checks the writer's ACL."""
    client = connect(endpoints.redis_url)
    yield client
    client.close()


@dataclass(frozen=True)
class SystemServers:
    """Debian's PostgreSQL and Redis, each started for the test session on loopback."""

    postgres_url: str  # the superuser's, database batchscore
    redis_admin_url: str
    redis_writer_url: str  # the default prefix's writer


@pytest.fixture(scope="session")
def system_servers() -> Iterator[SystemServers]:
    """Debian's PostgreSQL 15 and Redis 7, started from their packages' programs under a
    temporary folder on free loopback ports with authentication on, as the embedded
    servers are, and stopped at the end of the session. A test that needs them fails,
    never skips, when the packages are missing."""
    root = Path(tempfile.mkdtemp(prefix="batchscore-system-servers-"))
    try:
        with debian_servers(root) as (postgres, redis_server):
            yield SystemServers(postgres.url(), redis_server.admin_url(),
                                redis_server.url(Names(), "writer"))
    except MissingServerError as error:
        pytest.fail(f"{error} (as .ci/run does)", pytrace=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """Three masters with a replica each, from Debian's ``redis-server``, on free loopback
    ports for the test session, the default deployment's users on every node; stopped
    by the process ids the nodes wrote. A test that kills a node starts the cluster
    again with :func:`healthy_cluster`."""
    try:
        executable = require_redis_server()
    except MissingServerError as error:
        pytest.fail(f"{error} (as .ci/run does)", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="batchscore-redis-cluster-"))
    cluster = LocalRedisCluster(root / "cluster", root, executable=executable)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def healthy_cluster(cluster: LocalRedisCluster) -> LocalRedisCluster:
    """``cluster`` emptied, or started afresh if a test took a node down."""
    if len(cluster.masters_now()) != cluster.masters or any(
            not cluster.is_running(node) for node in cluster.nodes):
        cluster.stop()
        cluster.start()
    for node in cluster.masters_now():
        admin = cluster.node_admin(node)
        try:
            admin.flushall()
        finally:
            admin.close()
    return cluster


@pytest.fixture
def cluster_writer(redis_cluster: LocalRedisCluster) -> Iterator[redis.Redis]:
    """The default prefix's writer on an emptied cluster, as publishing connects."""
    client = connect(healthy_cluster(redis_cluster).url(Names(), "writer"))
    yield client
    client.close()


def reset_database(engine: sa.engine.Engine) -> None:
    """Drop everything the migrations made, yoyo's record of them too (it is in batchscore)."""
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS bi CASCADE"))
        conn.execute(sa.text("DROP SCHEMA IF EXISTS batchscore CASCADE"))


@contextmanager
def redis_full(admin: redis.Redis) -> Iterator[None]:
    """The Redis of ``admin`` full within the block, refusing writes with its own ``OOM``
    as at its real limit (``maxmemory`` of 1 byte, nothing to evict); as before after it."""
    policy = admin.config_get("maxmemory-policy")["maxmemory-policy"]
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    try:
        yield
    finally:
        admin.config_set("maxmemory", 0)
        admin.config_set("maxmemory-policy", policy)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
