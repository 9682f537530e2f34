"""What can be checked of docker/ without a Docker engine."""

import re
from pathlib import Path

import yaml

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
    assert env["AIRFLOW_CONN_BATCHSCORE_REDIS"] == "redis://redis:6379/0"
    assert "spark-master" in env["AIRFLOW_CONN_SPARK_DEFAULT"]
    # Airflow keeps its own metadata database.
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("/airflow")
    assert "spark://spark-master:7077" in " ".join(services["spark-worker"]["command"])
    init_sql = (DOCKER / "postgres-init.sql").read_text()
    assert "CREATE DATABASE airflow" in init_sql and "CREATE DATABASE batchscore" in init_sql


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
