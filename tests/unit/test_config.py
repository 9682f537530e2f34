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


def test_environment_overrides_every_setting(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "BATCHSCORE_HOME": str(tmp_path),
        "BATCHSCORE_DATABASE_URL": "postgresql://u@db:5432/x",
        "BATCHSCORE_REDIS_URL": "redis://cache:6379/2",
        "BATCHSCORE_SPARK_MASTER": "spark://m:7077",
        "BATCHSCORE_TOP_K": "20",
    })
    assert settings.home == tmp_path
    assert settings.database_url == "postgresql://u@db:5432/x"
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.spark_master == "spark://m:7077"
    assert settings.top_k == 20


def test_blank_values_count_as_unset() -> None:
    settings = Settings.from_env({"BATCHSCORE_DATABASE_URL": "  ", "BATCHSCORE_REDIS_URL": ""})
    assert settings.database_url is None
    assert settings.redis_url is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BATCHSCORE_DATABASE_URL", "mysql://x/y", "must be a postgresql:// URL, got 'mysql'"),
        ("BATCHSCORE_REDIS_URL", "http://x", "must be a redis:// URL, got 'http'"),
        ("BATCHSCORE_TOP_K", "ten", "BATCHSCORE_TOP_K must be a whole number, got 'ten'"),
        ("BATCHSCORE_TOP_K", "0", "BATCHSCORE_TOP_K must be at least 1, got 0"),
    ],
)
def test_malformed_settings_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({name: value})
