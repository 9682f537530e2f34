"""The Redis users, each trying what it may and may not do, on a real server.

Every refusal is the server's: a ``NOPERM`` reply (redis-py's NoPermissionError),
and the server's own ACL log names the user and the command or key it refused.
Runs on the embedded server (Redis 6.2) and on Debian's Redis 7, which the session
starts (``system_servers`` in tests/conftest.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import pytest
import redis
from redis.exceptions import NoPermissionError

from jobs.contracts.redis import Keyspace
from jobs.platform import services
from jobs.platform.config import Settings
from jobs.platform.names import Names
from jobs.platform.redis_client import RedisAuthError, RedisPermissionError, connect
from jobs.platform.services.redis import set_users, user_of
from jobs.publish.redis import COMPARE_AND_SET_SCRIPT

PREFIX = "acltest"
KEYS = Keyspace(PREFIX)
POINTER = KEYS.pointer_key()
USER_KEY = KEYS.user_key(7, 1)
META_KEY = KEYS.meta_key(7)
VERSIONS = KEYS.versions_key()
# Keys outside the deployment: another prefix, one that only starts like it, no prefix.
OUTSIDE = [b"acltest_other:recs:current", b"acltest2:recs:current", b"acltest_plain"]
# Only the keys these tests make are removed: the other server may hold other data.
MADE = [*OUTSIDE, POINTER, USER_KEY, META_KEY, VERSIONS, KEYS.user_key(8, 1)]


@dataclass
class Server:
    admin: redis.Redis
    writer: redis.Redis
    reader: redis.Redis
    names: Names
    writer_url: str


def embedded(settings: Settings) -> Iterator[Server]:
    ours = Settings.from_env({"BATCHSCORE_HOME": str(settings.home),
                              "BATCHSCORE_REDIS_PREFIX": PREFIX})
    writer_url = services.redis_url(ours, "writer")
    yield Server(connect(services.redis_url(ours, "admin")), connect(writer_url),
                 connect(services.redis_url(ours, "reader")), ours.names, writer_url)


def system(admin_url: str) -> Iterator[Server]:
    names = Names(redis_prefix=PREFIX)
    admin = connect(admin_url)
    passwords = {"writer": secrets.token_urlsafe(16), "reader": secrets.token_urlsafe(16)}
    set_users(admin, names, passwords)
    address = urlsplit(admin_url)

    def url(role: str) -> str:
        user = user_of(names, role)  # type: ignore[arg-type]
        return (f"redis://{user}:{quote(passwords[role], safe='')}@{address.hostname}:"
                f"{address.port or 6379}{address.path or '/0'}")

    try:
        yield Server(admin, connect(url("writer")), connect(url("reader")), names,
                     url("writer"))
    finally:
        admin.execute_command("ACL", "DELUSER", names.redis_writer_user,
                              names.redis_reader_user)


@pytest.fixture(params=["embedded", "system"])
def server(request, settings: Settings) -> Iterator[Server]:
    made = (embedded(settings) if request.param == "embedded"
            else system(request.getfixturevalue("system_servers").redis_admin_url))
    found = next(made)
    found.admin.delete(*MADE)
    for key in OUTSIDE:
        found.admin.set(key, b"not yours")
    found.admin.set(POINTER, b"7")
    found.admin.set(USER_KEY, b"[[10,0.5]]")
    found.admin.set(META_KEY, b"{}")
    found.admin.sadd(VERSIONS, 7)
    found.admin.acl_log_reset()
    yield found
    found.admin.delete(*MADE)
    made.close()


def refused(server: Server, client: redis.Redis, *command: str | bytes) -> None:
    """``command`` is refused by the server, which logs the refusal against the user and
    names the command or the key it refused."""
    server.admin.acl_log_reset()
    user = client.connection_pool.connection_kwargs["username"]
    with pytest.raises(redis.ResponseError) as err:
        client.execute_command(*command)
    if command[0] == "DEBUG" and not isinstance(err.value, NoPermissionError):
        # Redis 7 refuses DEBUG to everyone unless enable-debug-command allows it,
        # before its ACL is asked; so ask the ACL (ACL DRYRUN, Redis 7).
        assert "DEBUG command not allowed" in str(err.value)
        assert b"no permissions" in server.admin.execute_command("ACL", "DRYRUN", user,
                                                                 *command)
        return
    assert isinstance(err.value, NoPermissionError), err.value
    [entry] = server.admin.acl_log(count=1)
    assert entry["username"] == user
    words = [part.decode() if isinstance(part, bytes) else part for part in command]
    name = words[0].lower()
    if entry["reason"] == "command":
        assert entry["object"] in (name, f"{name}|{words[1].lower()}" if len(words) > 1 else name)
    else:
        assert entry["reason"] == "key" and entry["object"] in words[1:]


ADMIN_COMMANDS = [("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "maxmemory"), ("KEYS", "*"),
                  ("DEBUG", "SLEEP", "0"), ("SHUTDOWN", "NOSAVE"), ("ACL", "LIST"),
                  ("MODULE", "LIST"), ("INFO",), ("DBSIZE",), ("CLIENT", "LIST"),
                  ("MONITOR",), ("SAVE",), ("BGREWRITEAOF",), ("SWAPDB", "0", "1"),
                  ("MIGRATE", "h", "1", "k", "0", "1"), ("SCRIPT", "FLUSH")]


def test_the_writer_runs_what_publishing_needs_under_its_prefix(server: Server) -> None:
    writer = server.writer
    assert writer.ping() is True
    assert writer.set(KEYS.user_key(8, 1), b"[]", ex=60) is True
    assert writer.get(USER_KEY) == b"[[10,0.5]]"
    assert writer.exists(USER_KEY, META_KEY) == 2
    assert writer.expire(USER_KEY, 600) is True
    assert 0 < writer.ttl(USER_KEY) <= 600
    assert writer.persist(USER_KEY) is True
    assert writer.sadd(VERSIONS, 8) == 1
    assert writer.smembers(VERSIONS) == {b"7", b"8"}
    assert writer.srem(VERSIONS, 8) == 1
    assert writer.eval(COMPARE_AND_SET_SCRIPT, 1, POINTER, "7", "8") == 1
    assert sorted(writer.scan_iter(match=KEYS.version_pattern(7))) == [META_KEY, USER_KEY]
    assert writer.unlink(KEYS.user_key(8, 1)) == 1
    # a version's users record: appended, read back in ranges
    assert writer.append(KEYS.users_key(8), b"\x01\x00\x00\x00") == 4
    assert writer.getrange(KEYS.users_key(8), 0, 3) == b"\x01\x00\x00\x00"
    assert writer.unlink(KEYS.users_key(8)) == 1


@pytest.mark.parametrize("key", OUTSIDE)
def test_the_writer_touches_no_key_outside_its_prefix(server: Server, key: bytes) -> None:
    for command in (("GET", key), ("SET", key, "x"), ("UNLINK", key), ("EXPIRE", key, "1"),
                    ("PERSIST", key), ("SADD", key, "1"), ("SMEMBERS", key), ("TTL", key)):
        refused(server, server.writer, *command)
    with pytest.raises(NoPermissionError):
        server.writer.eval(COMPARE_AND_SET_SCRIPT, 1, key, "", "1")
    assert server.admin.get(key) == b"not yours"


@pytest.mark.parametrize("command", ADMIN_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_no_batchscore_user_runs_an_administrators_command(server: Server, command) -> None:
    refused(server, server.writer, *command)
    refused(server, server.reader, *command)
    assert server.admin.ping() is True


def test_the_writer_runs_no_other_command_even_under_its_prefix(server: Server) -> None:
    for command in (("DEL", USER_KEY), ("RENAME", USER_KEY, KEYS.user_key(7, 2)),
                    ("SETRANGE", USER_KEY, "0", "x"), ("OBJECT", "ENCODING", USER_KEY),
                    ("DUMP", USER_KEY), ("EVALSHA", "0" * 40, "0"), ("PUBLISH", "c", "x"),
                    ("MOVE", USER_KEY, "1")):
        refused(server, server.writer, *command)
    # A script runs as its caller: a command the writer may not run is refused inside it.
    with pytest.raises(redis.ResponseError, match=r"can't run this command|NOPERM"):
        server.writer.eval("return redis.call('FLUSHALL')", 0)
    assert server.admin.acl_log(count=1)[0]["object"] == "flushall"


def test_scan_is_keyless_so_the_writer_sees_names_outside_but_cannot_touch_them(
        server: Server) -> None:
    # Redis cannot scope SCAN to a pattern (it names no key): the writer can list
    # other deployments' key names, and every command on what it finds is refused.
    found = set(server.writer.scan_iter(match="*"))
    assert set(OUTSIDE) <= found
    for key in set(OUTSIDE):
        refused(server, server.writer, "GET", key)
    # The reader has no SCAN at all.
    refused(server, server.reader, "SCAN", "0")


def test_the_reader_gets_the_serving_keys_and_nothing_else(server: Server) -> None:
    reader = server.reader
    assert reader.get(POINTER) == b"7"
    assert reader.get(USER_KEY) == b"[[10,0.5]]"
    assert reader.get(META_KEY) == b"{}"
    assert reader.ping() is True
    # the versions set, other deployments' keys
    for key in (VERSIONS, *OUTSIDE):
        refused(server, reader, "GET", key)
    # no write of any kind, even to the keys it reads
    for command in (("MGET", USER_KEY), ("SET", POINTER, "8"), ("UNLINK", USER_KEY),
                    ("EXPIRE", USER_KEY, "1"),
                    ("PERSIST", USER_KEY), ("SADD", VERSIONS, "8"), ("DEL", POINTER),
                    ("SMEMBERS", VERSIONS), ("TTL", USER_KEY), ("EXISTS", USER_KEY),
                    ("EVAL", "return 1", "0")):
        refused(server, reader, *command)
    assert server.admin.get(POINTER) == b"7"


def test_errors_name_the_user_the_server_and_what_to_do(server: Server) -> None:
    address = urlsplit(server.writer_url)
    where = f"{address.hostname}:{address.port}"
    wrong = server.writer_url.replace(f":{address.password}@", ":wrong-password@")
    with pytest.raises(RedisAuthError) as err:
        connect(wrong).get(POINTER)
    message = str(err.value)
    assert f"refused user {server.names.redis_writer_user!r}" in message
    assert where in message and "batchscore redis url --role writer" in message
    assert "wrong-password" not in message and address.password not in message

    with pytest.raises(RedisAuthError, match=r"refused user 'default' \(no password was given"):
        connect(f"redis://{where}/0").get(POINTER)

    with pytest.raises(RedisPermissionError) as err:
        server.writer.flushall()
    assert str(err.value).startswith(
        f"Redis at {where} refused the command 'FLUSHALL' to user "
        f"{server.names.redis_writer_user!r} (NOPERM:")
