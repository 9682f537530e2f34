"""What can be checked of docker/ without a Docker engine."""

import hashlib
import os
import re
import subprocess
from pathlib import Path

import yaml

from jobs.platform.names import Names
from jobs.platform.services.redis import acl_rules

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def test_compose_declares_the_production_like_stack() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "airflow-init", "airflow-api-server", "airflow-scheduler",
            "airflow-dag-processor", "spark-master", "spark-worker"} <= set(services)
    scheduler = services["airflow-scheduler"]
    assert scheduler["command"] == ["airflow", "scheduler"]
    env = scheduler["environment"]
    assert env["AIRFLOW_CONN_BATCHSCORE_POSTGRES"].startswith("postgresql://")
    assert env["AIRFLOW_CONN_BATCHSCORE_REDIS"] == (
        "redis://${BATCHSCORE_REDIS_PREFIX:-batchscore}_writer:"
        "${REDIS_WRITER_PASSWORD:?set it in docker/.env}@redis:6379/0")
    assert "spark-master" in env["AIRFLOW_CONN_SPARK_DEFAULT"]
    # Airflow keeps its own metadata database.
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("/airflow")
    assert "spark://spark-master:7077" in " ".join(services["spark-worker"]["command"])
    init = (DOCKER / "postgres-init.sh").read_text()
    assert "CREATE DATABASE airflow" in init and "CREATE DATABASE batchscore" in init


def test_the_image_installs_the_way_ci_does() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    install = "pip install -e '.[dev]'"
    assert install in makefile
    assert re.search(r"pip install --no-cache-dir -e '\.\[dev\]'", dockerfile)
    assert "openjdk-17" in dockerfile and "FROM python:3.11" in dockerfile
    for source in re.findall(r"^COPY (\S+)", dockerfile, flags=re.MULTILINE):
        assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"
    for source in ("setup.cfg", "pyproject.toml", "README.md", "Makefile"):
        assert source in dockerfile


def test_compose_redis_requires_passwords_kept_out_of_git() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    redis = compose["services"]["redis"]
    assert redis["entrypoint"] == ["/usr/local/bin/batchscore-redis-start"]
    assert set(redis["environment"]) >= {"REDIS_ADMIN_PASSWORD", "REDIS_WRITER_PASSWORD",
                                         "REDIS_READER_PASSWORD"}
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    example = (DOCKER / ".env.example").read_text()
    for name in redis["environment"]:
        assert re.search(rf"^{name}=", example, flags=re.MULTILINE), name
    assert "docker/.env" in (REPO / ".gitignore").read_text().splitlines()


def test_the_compose_redis_gets_batchscores_users_and_rules(tmp_path: Path) -> None:
    """docker/redis/start.sh, run with a stand-in for the image's entrypoint, writes the
    users batchscore gives its embedded server, with hashed passwords, and starts
    redis-server with that ACL file."""
    stub = tmp_path / "bin" / "docker-entrypoint.sh"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\necho "$@"\n')
    stub.chmod(0o755)
    acl_file = tmp_path / "users.acl"
    env = {"PATH": f"{stub.parent}:{os.environ['PATH']}", "REDIS_ADMIN_PASSWORD": "a1",
           "REDIS_WRITER_PASSWORD": "w2", "REDIS_READER_PASSWORD": "r3",
           "BATCHSCORE_REDIS_PREFIX": "shop", "REDIS_ACL_FILE": str(acl_file)}
    done = subprocess.run(["sh", str(DOCKER / "redis" / "start.sh")], env=env, check=True,
                          capture_output=True, text=True)
    assert done.stdout.split() == ["redis-server", "--appendonly", "yes", "--aclfile",
                                   str(acl_file)]
    names = Names(redis_prefix="shop")

    def line(user: str, password: str, role: str) -> str:
        digest = hashlib.sha256(password.encode()).hexdigest()
        return " ".join(["user", user, "on", f"#{digest}", *acl_rules(names, role)])

    assert acl_file.read_text().splitlines() == [
        line("default", "a1", "admin"), line("shop_writer", "w2", "writer"),
        line("shop_reader", "r3", "reader")]
    assert oct(acl_file.stat().st_mode & 0o777) == "0o600"
    missing = subprocess.run(["sh", str(DOCKER / "redis" / "start.sh")],
                             env={**env, "REDIS_READER_PASSWORD": ""}, capture_output=True,
                             text=True)
    assert missing.returncode != 0 and "REDIS_READER_PASSWORD" in missing.stderr


# A compose variable: ${NAME}, ${NAME:?message}, ${NAME:-default}.
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[?-][^}]*)?\}")


def test_postgres_asks_every_login_for_a_password_kept_out_of_the_repository() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    services = yaml.safe_load(text)["services"]
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert postgres["POSTGRES_INITDB_ARGS"].split() == ["--auth-host=scram-sha-256",
                                                        "--auth-local=scram-sha-256"]
    # Every password is a variable that must be set (${NAME:?...}), none is written here.
    assert postgres["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    urls = {value for service in services.values()
            for value in (service.get("environment") or {}).values()
            if str(value).startswith("postgresql")}
    assert len(urls) == 3
    for url in urls:
        user, password = re.match(r"[^/]+//([^:@]+):(.+)@[^@]+$", url).groups()
        assert VARIABLE.fullmatch(password), f"{user}'s password is written in compose.yaml"

    # The tasks connect as the writer, the migrations as the owner.
    scheduler = services["airflow-scheduler"]["environment"]
    assert scheduler["AIRFLOW_CONN_BATCHSCORE_POSTGRES"].startswith(
        "postgresql://batchscore_writer:${BATCHSCORE_WRITER_PASSWORD:?")
    assert "BATCHSCORE_DATABASE_URL" not in scheduler
    init = services["airflow-init"]
    assert init["environment"]["BATCHSCORE_DATABASE_URL"].startswith(
        "postgresql://batchscore_owner:${BATCHSCORE_OWNER_PASSWORD:?")
    assert init["environment"]["AIRFLOW_CONN_BATCHSCORE_POSTGRES"] == \
        scheduler["AIRFLOW_CONN_BATCHSCORE_POSTGRES"]
    assert "batchscore db upgrade" in " ".join(init["command"])

    # docker/.env holds the values: it is ignored by git, and the example names every
    # PostgreSQL variable compose reads, with no value.
    example = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text()
                   .splitlines() if line and not line.startswith("#"))
    used = {name for name in VARIABLE.findall(text)
            if name.startswith(("POSTGRES", "BATCHSCORE", "AIRFLOW_DB")) and "REDIS" not in name}
    assert used == {"POSTGRES_PASSWORD", "BATCHSCORE_OWNER_PASSWORD",
                    "BATCHSCORE_WRITER_PASSWORD", "BATCHSCORE_BI_PASSWORD",
                    "AIRFLOW_DB_PASSWORD"}
    assert used <= set(example) and not any(example[name] for name in used)
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO,
                             check=False)
    assert ignored.returncode == 0, "docker/.env is not ignored by git"
    tracked = subprocess.run(["git", "ls-files", "docker/.env"], cwd=REPO,
                             capture_output=True, text=True, check=True)
    assert tracked.stdout == ""


def test_the_init_script_creates_the_logins_from_the_passwords_compose_passes() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    postgres = compose["services"]["postgres"]
    mounted = dict(volume.rsplit(":", 1)[0].split(":") for volume in postgres["volumes"]
                   if volume.startswith("./"))
    assert mounted == {"./postgres-init.sh": "/docker-entrypoint-initdb.d/10-batchscore.sh"}
    init = (DOCKER / "postgres-init.sh").read_text()
    for role, variable in (("batchscore_owner", "BATCHSCORE_OWNER_PASSWORD"),
                           ("batchscore_writer", "BATCHSCORE_WRITER_PASSWORD"),
                           ("batchscore_bi", "BATCHSCORE_BI_PASSWORD"),
                           ("airflow", "AIRFLOW_DB_PASSWORD")):
        psql_variable = re.search(rf"\\getenv (\w+) {variable}\n", init).group(1)
        assert f"CREATE ROLE {role} LOGIN PASSWORD :'{psql_variable}';" in init
        assert postgres["environment"][variable] == f"${{{variable}:?set it in docker/.env}}"
    assert "CREATE DATABASE batchscore OWNER batchscore_owner;" in init
