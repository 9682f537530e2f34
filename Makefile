# batchscore: `make help` lists the targets. The first `make run` or `make test`
# creates .venv and installs the project and its dependencies into it, and builds
# the checker that scores bundles in MLeap's JVM runtime (its jars from Maven Central).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MLEAP_JVM := jobs/bundles/jvm
MLEAP_RUNTIME := $(MLEAP_JVM)/target/.built

.DEFAULT_GOAL := help
.PHONY: help install run airflow test test-unit test-integration test-dags test-e2e test-faults lint format services-stop clean bench bench-cluster bench-peers bench-history bench-layouts bench-scale bench-rewrite bench-quality spark-cluster

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

$(MLEAP_RUNTIME): $(MLEAP_JVM)/pom.xml $(wildcard $(MLEAP_JVM)/src/main/java/batchscore/mleap/*.java)
	mvn -q -B -Dstyle.color=never -f $(MLEAP_JVM)/pom.xml package
	touch $@

install: $(STAMP) $(MLEAP_RUNTIME) ## create .venv, install batchscore with its dev tools, build the MLeap runtime checker

run: $(STAMP) ## quick start: sample data, train, one nightly through Airflow, embedded servers
	$(BIN)/batchscore quickstart

airflow: $(STAMP) ## a local Airflow (UI on 127.0.0.1:8080) with the DAGs, wired to the servers
	$(BIN)/batchscore airflow start

# Test files run in TEST_WORKERS processes (pytest-xdist), each file's tests in one of
# them in order, so a module's fixtures are made once; TEST_WORKERS=0 runs in this one.
TEST_WORKERS ?= 2

test: $(STAMP) $(MLEAP_RUNTIME) ## run every test tier (TEST_WORKERS=2 processes)
	@status=0; $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile || status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; fi; \
	exit $$status

test-unit: $(STAMP) $(MLEAP_RUNTIME) ## unit tests only
	$(BIN)/pytest tests/unit

test-integration: $(STAMP) ## integration tests (embedded PostgreSQL and Redis)
	$(BIN)/pytest tests/integration

test-dags: $(STAMP) ## DAG integrity and the nightly timetable
	$(BIN)/pytest tests/dags

test-e2e: $(STAMP) ## the whole flow at small scale, also through Airflow
	$(BIN)/pytest tests/e2e

test-faults: $(STAMP) ## fault injection: kills, restarts, concurrent runs and readers
	$(BIN)/pytest tests/faults

lint: $(STAMP) ## ruff over the code and tests
	$(BIN)/ruff check jobs dags tests

format: $(STAMP) ## apply ruff's fixes
	$(BIN)/ruff check --fix jobs dags tests

SIZE ?= default

# The peers the benchmarks compare against and the servers some of them start, from
# Debian's packages, installed when missing (as root, or through sudo): redis-cli and
# redis-benchmark, psql, PostgreSQL's JDBC driver for Spark's DataFrame.write.jdbc, and
# PostgreSQL 15 and Redis 7 (the scale run, the Redis Cluster pairs, the rewrite bench).
bench-peers: ## install what the benchmarks compare against and run on (redis-tools, postgresql-client, the JDBC driver, postgresql-15, redis-server)
	@missing=""; \
	command -v redis-benchmark >/dev/null || missing="$$missing redis-tools"; \
	command -v psql >/dev/null || missing="$$missing postgresql-client"; \
	[ -f /usr/share/java/postgresql.jar ] || missing="$$missing libpostgresql-jdbc-java"; \
	[ -x /usr/lib/postgresql/15/bin/pg_ctl ] || missing="$$missing postgresql-15"; \
	[ -x /usr/bin/redis-server ] || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  as_root=""; [ "$$(id -u)" -eq 0 ] || as_root=sudo; \
	  echo "installing the benchmarks' peers:$$missing"; \
	  $$as_root apt-get update -qq && \
	  $$as_root apt-get install -y -qq --no-install-recommends $$missing; \
	fi

bench: $(STAMP) bench-peers ## side-by-side benchmarks and their ratios, Redis Cluster pairs last (SIZE=large for the larger size)
	$(BIN)/python -m jobs.bench --size $(SIZE)

bench-cluster: $(STAMP) bench-peers ## only the Redis Cluster pairs: publish to 3 masters vs one server, reads vs redis-benchmark --cluster
	$(BIN)/python -m jobs.bench --cluster-only --size $(SIZE)

bench-history: $(STAMP) bench-peers ## only the interactions pair: the history vs CSV export and parse (EVENTS=100000000)
	$(BIN)/python -m jobs.bench --history-events $(or $(EVENTS),100000000)

bench-layouts: $(STAMP) bench-peers ## PostgreSQL's row-per-rank and row-per-user layouts side by side (USERS=1000000)
	$(BIN)/python -m jobs.bench --layouts --layout-users $(or $(USERS),1000000)

bench-scale: $(STAMP) bench-peers ## the nightly end to end and its floors, TURNS=3 turns each (USERS=1000000 ITEMS=20000) on Debian's PostgreSQL 15 and Redis 7 started for it (SERVERS=found: those the other benches use): stage times, peak memory, stored sizes
	$(BIN)/python -m jobs.bench --scale --scale-users $(or $(USERS),1000000) --scale-items $(or $(ITEMS),20000) --scale-turns $(or $(TURNS),3) --scale-servers $(or $(SERVERS),debian)

bench-rewrite: $(STAMP) bench-peers ## what Redis copies while it rewrites its append-only file during each publish step, Debian's Redis 7 and the embedded one (KEYS=3000000)
	$(BIN)/python -m jobs.bench --rewrite-copies --rewrite-keys $(or $(KEYS),3000000)

bench-quality: $(STAMP) ## every model family (defaults, tuned) and popularity on the sample and MovieLens 100K (BUDGET=5 minutes each), then EASE at ITEMS=20000
	$(BIN)/python -m jobs.bench --quality --budget-minutes $(or $(BUDGET),5) --ease-items $(or $(ITEMS),20000)

spark-cluster: $(STAMP) ## a Spark standalone master and worker on 127.0.0.1 until Ctrl-C
	$(BIN)/python -m jobs.bench.cluster

services-stop: $(STAMP) ## stop the embedded PostgreSQL and Redis
	$(BIN)/batchscore services stop

clean: ## remove the virtual environment and caches (keeps .batchscore state)
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info $(MLEAP_JVM)/target
