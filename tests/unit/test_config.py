from pathlib import Path

import pytest

from jobs.platform.config import ConfigError, Settings


def test_defaults_use_embedded_servers_under_dot_batchscore() -> None:
    settings = Settings.from_env({})
    assert settings.home == Path(".batchscore").absolute()
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.spark_master == "local[*]"
    assert settings.top_k == 50
    assert settings.keep_versions == 7
    assert settings.history_uri is None


def test_environment_overrides_every_setting(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "BATCHSCORE_HOME": str(tmp_path),
        "BATCHSCORE_DATABASE_URL": "postgresql://u@db:5432/x",
        "BATCHSCORE_REDIS_URL": "redis://cache:6379/2",
        "BATCHSCORE_SPARK_MASTER": "spark://m:7077",
        "BATCHSCORE_TOP_K": "20",
        "BATCHSCORE_KEEP_VERSIONS": "2",
        "BATCHSCORE_HISTORY_URI": "s3a://lake/events",
        "BATCHSCORE_EMPTY_DAY": "Fail",
    })
    assert settings.home == tmp_path
    assert settings.database_url == "postgresql://u@db:5432/x"
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.spark_master == "spark://m:7077"
    assert settings.top_k == 20
    assert settings.keep_versions == 2
    assert settings.history_uri == "s3a://lake/events"
    assert settings.empty_day == "fail"


def test_blank_values_count_as_unset() -> None:
    settings = Settings.from_env({"BATCHSCORE_DATABASE_URL": "  ", "BATCHSCORE_REDIS_URL": ""})
    assert settings.database_url is None
    assert settings.redis_url is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BATCHSCORE_DATABASE_URL", "mysql://x/y", "must be a postgresql:// URL, got 'mysql'"),
        ("BATCHSCORE_REDIS_URL", "http://x", r"must be a redis:// URL \(redis\+cluster:// for "
         r"a Redis Cluster\), got 'http'"),
        ("BATCHSCORE_TOP_K", "ten", "BATCHSCORE_TOP_K must be a whole number, got 'ten'"),
        ("BATCHSCORE_TOP_K", "0", "BATCHSCORE_TOP_K must be at least 1, got 0"),
        ("BATCHSCORE_KEEP_VERSIONS", "0", "BATCHSCORE_KEEP_VERSIONS must be a whole number "
         r"of at least 1 \(published versions kept besides the served one\), got '0'"),
        ("BATCHSCORE_KEEP_VERSIONS", "a week", "BATCHSCORE_KEEP_VERSIONS must be a whole"),
        ("BATCHSCORE_EMPTY_DAY", "alert", r"BATCHSCORE_EMPTY_DAY must be skip \(record the run "
         r"as skipped\) or fail \(fail the run\); both raise an alert. Got 'alert'"),
    ],
)
def test_malformed_settings_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({name: value})


def test_the_redis_reader_url_comes_with_the_writers() -> None:
    settings = Settings.from_env({
        "BATCHSCORE_REDIS_URL": "redis://batchscore_writer:w%40ss@cache:6379/0",
        "BATCHSCORE_REDIS_READER_URL": "redis://batchscore_reader:r@cache:6379/0",
    })
    assert settings.redis_url == "redis://batchscore_writer:w%40ss@cache:6379/0"
    assert settings.redis_reader_url == "redis://batchscore_reader:r@cache:6379/0"
    assert Settings.from_env({}).redis_reader_url is None


def test_a_reader_url_without_a_writer_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="BATCHSCORE_REDIS_READER_URL is set but "
                                          "BATCHSCORE_REDIS_URL is not"):
        Settings.from_env({"BATCHSCORE_REDIS_READER_URL": "redis://r:p@cache:6379/0"})


def test_a_malformed_reader_url_is_named_without_showing_it() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"BATCHSCORE_REDIS_URL": "redis://cache:6379/0",
                           "BATCHSCORE_REDIS_READER_URL": "http://r:secret@cache"})
    assert str(err.value) == ("BATCHSCORE_REDIS_READER_URL must be a redis:// URL "
                              "(redis+cluster:// for a Redis Cluster), got 'http'")


def test_a_redis_cluster_is_named_by_its_urls_scheme() -> None:
    settings = Settings.from_env({
        "BATCHSCORE_REDIS_URL": "redis+cluster://batchscore_writer:w@node1:7000/0",
        "BATCHSCORE_REDIS_READER_URL": "rediss+cluster://batchscore_reader:r@node1:7000/0",
    })
    assert settings.redis_url == "redis+cluster://batchscore_writer:w@node1:7000/0"
    assert settings.redis_reader_url == "rediss+cluster://batchscore_reader:r@node1:7000/0"


def test_a_configured_redis_hands_out_the_urls_it_was_given() -> None:
    from jobs.platform import services

    both = Settings.from_env({"BATCHSCORE_REDIS_URL": "redis://w:1@cache:6379/0",
                              "BATCHSCORE_REDIS_READER_URL": "redis://r:2@cache:6379/0"})
    assert services.redis_url(both, "writer") == "redis://w:1@cache:6379/0"
    assert services.redis_url(both, "reader") == "redis://r:2@cache:6379/0"
    with pytest.raises(ConfigError, match="no administrator URL for a configured Redis"):
        services.redis_url(both, "admin")
    writer_only = Settings.from_env({"BATCHSCORE_REDIS_URL": "redis://w:1@cache:6379/0"})
    with pytest.raises(ConfigError, match=r"BATCHSCORE_REDIS_READER_URL is not set: give the "
                                          r"URL of the reader user \(batchscore_reader\)"):
        services.redis_url(writer_only, "reader")


def test_the_writer_and_bi_urls_are_read_beside_the_owners() -> None:
    settings = Settings.from_env({
        "BATCHSCORE_DATABASE_URL": "postgresql://batchscore_owner:o@db:5432/x",
        "BATCHSCORE_WRITER_DATABASE_URL": "postgresql://batchscore_writer:w@db:5432/x",
        "BATCHSCORE_BI_DATABASE_URL": "postgresql://batchscore_bi:b@db:5432/x",
    })
    assert settings.database_url == "postgresql://batchscore_owner:o@db:5432/x"
    assert settings.writer_database_url == "postgresql://batchscore_writer:w@db:5432/x"
    assert settings.bi_database_url == "postgresql://batchscore_bi:b@db:5432/x"
    assert Settings.from_env({}).writer_database_url is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BATCHSCORE_DATABASE_URL": "postgresql://o@db/x",
          "BATCHSCORE_WRITER_DATABASE_URL": "mysql://w@db/x"},
         "BATCHSCORE_WRITER_DATABASE_URL must be a postgresql:// URL, got 'mysql'"),
        ({"BATCHSCORE_DATABASE_URL": "postgresql://o@db/x",
          "BATCHSCORE_BI_DATABASE_URL": "db:5432"},
         "BATCHSCORE_BI_DATABASE_URL must be a postgresql:// URL, got 'db:5432'"),
        ({"BATCHSCORE_BI_DATABASE_URL": "postgresql://b@db/x"},
         "BATCHSCORE_BI_DATABASE_URL is set but BATCHSCORE_DATABASE_URL is not"),
    ],
)
def test_a_role_url_that_cannot_be_used_is_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)
