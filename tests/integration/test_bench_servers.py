"""The scale run's ``--scale-servers debian``: Debian's PostgreSQL 15 and Redis 7 started
for the run, the bench database and Redis database in them, and both stopped after."""

from __future__ import annotations

import psycopg2
import pytest
import redis

from jobs.bench.servers import BENCH_DATABASE, BENCH_REDIS_DB, debian_or_resolved
from jobs.platform.config import Settings
from jobs.platform.redis_client import connect


def test_debians_servers_run_for_the_block_and_stop_after(tmp_path) -> None:
    settings = Settings.from_env({"BATCHSCORE_HOME": str(tmp_path / "home")})
    with debian_or_resolved(settings, tmp_path / "work", debian=True) as servers:
        connection = psycopg2.connect(servers.database_url)
        try:
            with connection.cursor() as cur:
                cur.execute("SELECT current_database(), current_setting('server_version_num')")
                database, version = cur.fetchone()
        finally:
            connection.close()
        assert database == BENCH_DATABASE
        assert int(version) // 10_000 == 15
        client = connect(servers.redis_url)
        assert client.info("server")["redis_version"].split(".")[0] == "7"
        assert client.info("memory")["mem_allocator"].startswith("jemalloc")
        assert servers.redis_host_port_db[2] == BENCH_REDIS_DB
        client.set("bench-key", "1")
        assert client.dbsize() == 1
        assert "Debian" in servers.where
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(servers.database_url, connect_timeout=2).close()
    with pytest.raises(redis.ConnectionError):
        connect(servers.redis_url).ping()
