"""`batchscore redis url`, and what the CLI prints when Redis refuses a user: one line
naming the user, the server and what to do, never a password or a traceback."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from jobs.cli import main
from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.redis_client import connect


@pytest.fixture
def cli_env(settings: Settings, endpoints, redis_admin, monkeypatch) -> Settings:
    monkeypatch.setenv("BATCHSCORE_HOME", str(settings.home))
    for name in ("BATCHSCORE_DATABASE_URL", "BATCHSCORE_REDIS_URL",
                 "BATCHSCORE_REDIS_READER_URL", "BATCHSCORE_REDIS_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    return settings


def run(capsys, *argv: str, code: int = 0) -> tuple[str, str]:
    capsys.readouterr()
    assert main(list(argv)) == code
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_redis_url_prints_each_users_url_with_its_password(cli_env, capsys) -> None:
    writer, _ = run(capsys, "redis", "url", "--role", "writer")
    reader, _ = run(capsys, "redis", "url", "--role", "reader")
    password = (cli_env.home / "secrets" / "redis_batchscore_reader").read_text().strip()
    assert reader.strip() == services.redis_url(cli_env, "reader")
    assert urlsplit(reader.strip()).username == "batchscore_reader"
    assert urlsplit(reader.strip()).password == password
    assert urlsplit(writer.strip()).username == "batchscore_writer"
    assert connect(writer.strip()).set("batchscore:recs:current", "3")
    assert connect(reader.strip()).get("batchscore:recs:current") == b"3"


def test_recs_reads_as_the_reader(cli_env, capsys) -> None:
    _, err = run(capsys, "recs", "1", code=1)
    assert err.startswith("error: no recommendations are published in this Redis yet")


def test_a_refused_password_is_one_clear_line(cli_env, capsys, monkeypatch) -> None:
    good = services.redis_url(cli_env, "reader")
    address = urlsplit(good)
    monkeypatch.setenv("BATCHSCORE_REDIS_URL", services.redis_url(cli_env, "writer"))
    monkeypatch.setenv("BATCHSCORE_REDIS_READER_URL",
                       good.replace(address.password, "not-the-password"))
    out, err = run(capsys, "recs", "1", code=1)
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: Redis at 127.0.0.1:{address.port} refused user "
                          "'batchscore_reader' (its password was refused: ")
    assert "BATCHSCORE_REDIS_READER_URL" in err
    assert "not-the-password" not in err and address.password not in err


def test_a_missing_reader_url_is_named(cli_env, capsys, monkeypatch) -> None:
    monkeypatch.setenv("BATCHSCORE_REDIS_URL", services.redis_url(cli_env, "writer"))
    _, err = run(capsys, "recs", "1", code=1)
    assert err.startswith("error: BATCHSCORE_REDIS_READER_URL is not set")


def test_status_shows_no_password(cli_env, capsys) -> None:
    out, _ = run(capsys, "status", "--json")
    status = json.loads(out)
    assert status["redis_url"].startswith("redis://batchscore_writer:***@127.0.0.1:")
    assert status["redis_prefix"] == "batchscore"
    text, _ = run(capsys, "status")
    for name in ("redis", "redis_batchscore_writer", "redis_batchscore_reader"):
        assert (cli_env.home / "secrets" / name).read_text().strip() not in out + text
