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


# The cluster profile: six Redis nodes and the service that forms them into a cluster,
# and docker/compose.cluster.yaml, which points batchscore's services at it.
NODES = [f"redis-node-{number}" for number in range(1, 7)]
SINGLE_SERVER_SERVICES = {"postgres", "redis", "airflow-init", "airflow-api-server",
                          "airflow-scheduler", "airflow-dag-processor", "spark-master",
                          "spark-worker"}


class Override(dict):
    """A mapping compose.cluster.yaml tags !override: it replaces the base's, not merged."""


class ComposeLoader(yaml.SafeLoader):
    pass


ComposeLoader.add_constructor(
    "!override", lambda loader, node: Override(loader.construct_mapping(node, deep=True)))


def compose_services() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]


def cluster_overrides() -> dict:
    # ComposeLoader is a SafeLoader that also reads !override.
    return yaml.load((DOCKER / "compose.cluster.yaml").read_text(),
                     Loader=ComposeLoader)["services"]


def test_without_a_profile_the_stack_is_the_single_servers() -> None:
    services = compose_services()
    default = {name: service for name, service in services.items()
               if not service.get("profiles")}
    assert set(default) == SINGLE_SERVER_SERVICES
    assert {tuple(service["profiles"]) for name, service in services.items()
            if name not in default} == {("cluster",)}
    redis = default["redis"]
    assert redis["image"] == "redis:7"
    assert redis["volumes"] == ["redis-data:/data",
                                "./redis/start.sh:/usr/local/bin/batchscore-redis-start:ro"]
    assert "REDIS_CLUSTER_ANNOUNCE_HOSTNAME" not in redis["environment"]
    for name, service in default.items():
        env = service.get("environment") or {}
        for variable in ("AIRFLOW_CONN_BATCHSCORE_REDIS", "BATCHSCORE_REDIS_URL",
                         "BATCHSCORE_REDIS_READER_URL"):
            if variable in env:
                assert env[variable].startswith("redis://"), (name, variable)
                assert env[variable].endswith("@redis:6379/0"), (name, variable)
        # Nothing the default starts waits for (or starts) a service of the profile.
        assert set(service.get("depends_on") or ()) <= set(default), name
    for name in ("airflow-init", "airflow-api-server", "airflow-scheduler",
                 "airflow-dag-processor"):
        assert default[name]["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_the_cluster_profile_runs_three_masters_and_three_replicas() -> None:
    services = compose_services()
    single = services["redis"]
    assert sorted(name for name, service in services.items()
                  if service.get("profiles") == ["cluster"]) == sorted([*NODES,
                                                                       "redis-cluster"])
    data_volumes = set()
    for name in NODES:
        node = services[name]
        assert node["image"] == single["image"]
        assert node["entrypoint"] == single["entrypoint"]
        assert node["healthcheck"]["test"] == single["healthcheck"]["test"]
        # The single server's users, from the same variables, and the name clients are
        # sent to, which must be the one other containers reach it by.
        env = dict(node["environment"])
        assert env.pop("REDIS_CLUSTER_ANNOUNCE_HOSTNAME") == node["hostname"] == name
        assert env == single["environment"]
        data, script = node["volumes"]
        assert script == "./redis/start.sh:/usr/local/bin/batchscore-redis-start:ro"
        assert data.endswith(":/data")
        data_volumes.add(data.split(":")[0])
    assert len(data_volumes) == len(NODES)
    assert data_volumes <= set(yaml.safe_load((DOCKER / "compose.yaml").read_text())["volumes"])

    create = services["redis-cluster"]
    env = create["environment"]
    assert env["REDISCLI_AUTH"] == "${REDIS_ADMIN_PASSWORD:?set it in docker/.env}"
    assert env["REDIS_CLUSTER_NODES"].split() == [f"{name}:6379" for name in NODES]
    replicas = int(env["REDIS_CLUSTER_REPLICAS"])
    assert (len(NODES) // (1 + replicas), len(NODES) // (1 + replicas) * replicas) == (3, 3)
    assert create["depends_on"] == {name: {"condition": "service_healthy"} for name in NODES}
    assert create["restart"] == "no"
    mounted = dict(volume.rsplit(":", 1)[0].split(":") for volume in create["volumes"])
    assert mounted == {"./redis/create-cluster.sh": create["entrypoint"][0]}


def test_compose_cluster_yaml_points_every_batchscore_service_at_the_cluster() -> None:
    services = compose_services()
    overrides = cluster_overrides()
    batchscore = {name for name, service in services.items()
                  if "BATCHSCORE_REDIS_URL" in (service.get("environment") or {})}
    assert set(overrides) == batchscore
    for name in batchscore:
        base, override = services[name], overrides[name]
        env = {**base["environment"], **override["environment"]}
        # The same users and passwords as on the single server, at a node of the cluster.
        for variable in ("AIRFLOW_CONN_BATCHSCORE_REDIS", "BATCHSCORE_REDIS_URL",
                         "BATCHSCORE_REDIS_READER_URL"):
            single = base["environment"][variable]
            assert env[variable] == single.replace("redis://", "redis+cluster://", 1) \
                .replace("@redis:6379/", "@redis-node-1:6379/"), (name, variable)
        assert env["AIRFLOW_CONN_BATCHSCORE_REDIS"] == env["BATCHSCORE_REDIS_URL"]
        assert "_writer:" in env["BATCHSCORE_REDIS_URL"]
        assert "_reader:" in env["BATCHSCORE_REDIS_READER_URL"]
        if "redis" not in (base.get("depends_on") or {}):
            assert "depends_on" not in override, name
            continue
        # Waits for the cluster to be formed, for everything else as before, and not
        # for (so does not start) the single server.
        depends = override["depends_on"]
        assert isinstance(depends, Override), f"{name}: depends_on is merged, not replaced"
        expected = {**base["depends_on"],
                    "redis-cluster": {"condition": "service_completed_successfully"}}
        del expected["redis"]
        assert depends == expected, name


def test_no_password_is_on_a_command_line_of_the_cluster_profile() -> None:
    services = compose_services()
    for name in [*NODES, "redis-cluster"]:
        service = services[name]
        for field in ("entrypoint", "command"):
            assert "PASSWORD" not in " ".join(service.get(field) or ()), (name, field)
        for value in service.get("environment", {}).values():
            assert "PASSWORD" not in value or VARIABLE.fullmatch(value), name
        healthcheck = " ".join(service.get("healthcheck", {}).get("test", ()))
        # A password only ever goes to redis-cli through REDISCLI_AUTH.
        assert re.sub(r'REDISCLI_AUTH="\$\$REDIS_ADMIN_PASSWORD"', "", healthcheck) \
            .count("PASSWORD") == 0, name
    # The one-shot service hands redis-cli the administrator's password in its
    # environment; the script never puts it in an argument.
    script = (DOCKER / "redis" / "create-cluster.sh").read_text()
    assert "REDISCLI_AUTH" in script and "-a " not in script and "--pass" not in script


def cluster_node_start(tmp_path: Path, **extra: str) -> tuple[subprocess.CompletedProcess,
                                                              Path]:
    """docker/redis/start.sh as a cluster node, with a stand-in for the image's
    entrypoint that prints the command it was given; its data folder."""
    stub = tmp_path / "bin" / "docker-entrypoint.sh"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\necho "$@"\n')
    stub.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    env = {"PATH": f"{stub.parent}:{os.environ['PATH']}", "REDIS_ADMIN_PASSWORD": "a1",
           "REDIS_WRITER_PASSWORD": "w2", "REDIS_READER_PASSWORD": "r3",
           "BATCHSCORE_REDIS_PREFIX": "shop", "REDIS_DATA_DIR": str(data),
           "REDIS_CLUSTER_ANNOUNCE_HOSTNAME": "redis-node-4", **extra}
    done = subprocess.run(["sh", str(DOCKER / "redis" / "start.sh")], env=env, check=True,
                          capture_output=True, text=True)
    return done, data


def test_a_cluster_node_gets_batchscores_users_with_the_cluster_commands(
        tmp_path: Path) -> None:
    done, data = cluster_node_start(tmp_path)
    config = data / "redis.conf"
    # Everything is in the configuration file: no password on the command line.
    assert done.stdout.split() == ["redis-server", str(config)]
    names = Names(redis_prefix="shop")

    def line(user: str, password: str, role: str) -> str:
        digest = hashlib.sha256(password.encode()).hexdigest()
        return " ".join(["user", user, "on", f"#{digest}",
                         *acl_rules(names, role, cluster=True)])

    acl_file = data / "users.acl"
    assert acl_file.read_text().splitlines() == [
        line("default", "a1", "admin"), line("shop_writer", "w2", "writer"),
        line("shop_reader", "r3", "reader")]
    assert config.read_text().splitlines() == [
        f"dir {data}", "appendonly yes", f"aclfile {acl_file}", "cluster-enabled yes",
        "cluster-config-file nodes.conf", "cluster-node-timeout 5000",
        "cluster-announce-hostname redis-node-4", "cluster-preferred-endpoint-type hostname",
        # A replica authenticates to its master as the administrator.
        "masteruser default", "masterauth a1"]
    for private in (acl_file, config):
        assert oct(private.stat().st_mode & 0o777) == "0o600", private


def test_the_cluster_is_formed_by_redis_cli_with_the_password_in_its_environment(
        tmp_path: Path) -> None:
    """docker/redis/create-cluster.sh, with a stand-in redis-cli that records its
    arguments and REDISCLI_AUTH and answers CLUSTER INFO as a new, then a formed, node."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    formed = tmp_path / "formed"
    cli = bin_dir / "redis-cli"
    cli.write_text(f"""#!/bin/sh
printf '%s|%s\\n' "$REDISCLI_AUTH" "$*" >> {calls}
case "$*" in
  *"cluster info"*)
    if [ -e {formed} ]; then printf 'cluster_state:ok\\r\\ncluster_known_nodes:6\\r\\n'
    else printf 'cluster_state:fail\\r\\ncluster_known_nodes:1\\r\\n'; fi ;;
  *"--cluster create"*) touch {formed} ;;
esac
""")
    cli.chmod(0o755)
    nodes = " ".join(f"localhost:{7000 + number}" for number in range(6))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "REDISCLI_AUTH": "admin-secret",
           "REDIS_CLUSTER_NODES": nodes, "REDIS_CLUSTER_REPLICAS": "1"}
    script = str(DOCKER / "redis" / "create-cluster.sh")
    subprocess.run(["sh", script], env=env, check=True, capture_output=True, text=True)
    recorded = [line.split("|", 1) for line in calls.read_text().splitlines()]
    assert {auth for auth, _ in recorded} == {"admin-secret"}
    assert not any("admin-secret" in argv for _, argv in recorded)
    addresses = [f"127.0.0.1:{7000 + number}" for number in range(6)]
    creates = [argv for _, argv in recorded if "--cluster create" in argv]
    assert creates == [" ".join(["--cluster", "create", *addresses, "--cluster-replicas", "1",
                                 "--cluster-yes"])]

    # Started again: nothing is formed, every node meets the first at its address.
    calls.unlink()
    subprocess.run(["sh", script], env=env, check=True, capture_output=True, text=True)
    argvs = [line.split("|", 1)[1] for line in calls.read_text().splitlines()]
    assert not any("--cluster create" in argv for argv in argvs)
    assert [argv for argv in argvs if "meet" in argv] == [
        f"-h 127.0.0.1 -p {7000 + number} cluster meet 127.0.0.1 7000" for number in range(6)]

    missing = subprocess.run(["sh", script], env={**env, "REDISCLI_AUTH": ""},
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "REDIS_ADMIN_PASSWORD" in missing.stderr
