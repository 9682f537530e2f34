"""Redis clients whose authentication and permission errors say who, where and what to do.

Redis answers a wrong password with ``WRONGPASS``, a missing one with
``NOAUTH`` and a command its ACL refuses with ``NOPERM``, naming neither the
user nor (for a key it refuses) the command. Clients made by :func:`connect`
raise :class:`RedisAuthError` and :class:`RedisPermissionError` instead, with
the user, the server and the command in the message, never a password.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
import redis.cluster
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ClusterDownError, NoPermissionError, SlotNotCoveredError

# What each kind of error asks the person to do.
AUTH_HINT = ("give the user's password in the URL: `batchscore redis url --role writer` or "
             "`--role reader` prints it for the embedded server; for a configured server set "
             "BATCHSCORE_REDIS_URL (the writer) or BATCHSCORE_REDIS_READER_URL (the reader), "
             "or the Airflow connection batchscore_redis")
PERMISSION_HINT = ("each batchscore Redis user may run only what its role needs (README, "
                   "'Redis users'); use the writer's URL to publish, the reader's to read")


class RedisAccessError(Exception):
    """Redis refused a user: its password, or a command or key its ACL does not allow."""


class RedisAuthError(RedisAccessError, redis.AuthenticationError):
    """Redis did not accept the user's credentials (or was given none)."""


class RedisPermissionError(RedisAccessError, NoPermissionError):
    """Redis's ACL refused a command or key to the user (``NOPERM``)."""


def server_of(connection: Any) -> str:
    path = getattr(connection, "path", None)
    return f"unix:{path}" if path else f"{connection.host}:{connection.port}"


def user_of(connection: Any) -> str:
    return connection.username or "default"


def auth_error(connection: Any, detail: str) -> RedisAuthError:
    if connection.password:
        why = f"its password was refused: {detail}"
    else:
        why = "no password was given, and the server requires one"
    return RedisAuthError(f"Redis at {server_of(connection)} refused user "
                          f"{user_of(connection)!r} ({why}); {AUTH_HINT}")


def permission_error(connection: Any, command: str | None, detail: str) -> RedisPermissionError:
    what = f"the command {command.upper()!r}" if command else "a command"
    return RedisPermissionError(
        f"Redis at {server_of(connection)} refused {what} to user {user_of(connection)!r} "
        f"(NOPERM: {detail.removeprefix('NOPERM ')}); {PERMISSION_HINT}")


class ExplainedErrors:
    """Mixed into a redis-py connection class: its access errors name user and server."""

    last_command: str | None = None

    def on_connect_check_health(self, check_health: bool = True) -> None:
        try:
            super().on_connect_check_health(check_health)  # type: ignore[misc]
        except RedisAccessError:
            raise
        except redis.AuthenticationError as err:
            raise auth_error(self, str(err)) from None

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        super().send_command(*args, **kwargs)  # type: ignore[misc]
        # Only the command's name is kept: AUTH's arguments are a password.
        self.last_command = str(args[0]) if args else None

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # A pipeline's commands come packed; redis-py names the failing one itself.
        self.last_command = None
        super().send_packed_command(command, check_health)  # type: ignore[misc]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except RedisAccessError:
            raise
        except NoPermissionError as err:
            raise permission_error(self, self.last_command, str(err)) from None
        except redis.AuthenticationError as err:
            raise auth_error(self, str(err)) from None


class ExplainedConnection(ExplainedErrors, Connection):
    pass


class ExplainedSSLConnection(ExplainedErrors, SSLConnection):
    pass


class ExplainedUnixConnection(ExplainedErrors, UnixDomainSocketConnection):
    pass


CONNECTION_CLASSES = {"redis": ExplainedConnection, "rediss": ExplainedSSLConnection,
                      "unix": ExplainedUnixConnection}
# A Redis Cluster is named by its own scheme: the URL's host and port are any one node
# (the others are learnt from it), its user and password are those of every node.
CLUSTER_SCHEME = "redis+cluster"
CLUSTER_SCHEMES = {CLUSTER_SCHEME: "redis", "rediss+cluster": "rediss"}


# redis-py's cluster client tries a command again at once when its node is lost,
# reloading the slot map; a master that went down is replaced by its replica only
# after the cluster's node timeout and an election (seconds). So a command on a
# cluster is done again for up to FAILOVER_WAIT_SECONDS, every FAILOVER_POLL_SECONDS.
FAILOVER_WAIT_SECONDS = 15.0
FAILOVER_POLL_SECONDS = 0.1
FAILOVER_ERRORS = (redis.ConnectionError, redis.TimeoutError, ClusterDownError,
                   SlotNotCoveredError)

T = TypeVar("T")


def through_failover(call: Callable[[], T], what: str,
                     wait: float = FAILOVER_WAIT_SECONDS) -> T:
    """``call()``, done again while a cluster fails over, for at most ``wait`` seconds;
    then the error says what could not be done and why."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return call()
        except FAILOVER_ERRORS as err:
            if time.monotonic() > deadline:
                raise redis.ConnectionError(
                    f"the Redis cluster did not answer {what} for {wait:.0f}s: a master is "
                    f"down and no replica has taken over its slots ({err})") from err
            time.sleep(FAILOVER_POLL_SECONDS)


class FailoverCluster(redis.cluster.RedisCluster):
    """redis-py's cluster client, whose commands wait out a failover
    (:func:`through_failover`)."""

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        run = super().execute_command
        return through_failover(lambda: run(*args, **kwargs),
                                str(args[0]) if args else "a command")


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def is_cluster(client: Any) -> bool:
    return isinstance(client, redis.cluster.RedisCluster)


def connect(url: str, **kwargs: Any) -> redis.Redis:
    """A client for ``url`` as ``redis.Redis.from_url`` makes it, with the errors above:
    ``redis://``, ``rediss://`` or ``unix://`` for one server; ``redis+cluster://`` or
    ``rediss+cluster://`` for a Redis Cluster (a ``redis.cluster.RedisCluster``, which
    follows the cluster's slot map and its redirections, and whose commands outlast
    a failover: :class:`FailoverCluster`)."""
    scheme = urlsplit(url).scheme
    if scheme in CLUSTER_SCHEMES:
        base = CLUSTER_SCHEMES[scheme]
        return FailoverCluster.from_url(  # type: ignore[return-value]
            base + url[len(scheme):], connection_class=CONNECTION_CLASSES[base], **kwargs)
    if scheme not in CONNECTION_CLASSES:
        raise ValueError(f"not a Redis URL: scheme {scheme!r} (redis, rediss or unix for one "
                         f"server, {' or '.join(CLUSTER_SCHEMES)} for a cluster)")
    return redis.Redis.from_url(url, connection_class=CONNECTION_CLASSES[scheme], **kwargs)
