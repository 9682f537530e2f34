"""A Spark standalone master and one worker on 127.0.0.1, from the pyspark distribution.

``python -m jobs.bench.cluster`` (``make spark-cluster``) runs one in the
foreground until interrupted and prints its master URL for ``spark-submit
--master``; tests start one with :class:`StandaloneCluster`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from jobs.platform.services.ports import LOOPBACK, free_port

logger = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 90


def spark_bin(name: str) -> str:
    """A launcher script of the pyspark distribution this interpreter runs."""
    import pyspark

    path = Path(pyspark.__file__).parent / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the pyspark installation")
    return str(path)


class StandaloneCluster:
    """Master and worker as child processes on free ports; stopped on exit."""

    def __init__(self, cores: int = 1, memory: str = "1g", work_dir: Path | None = None
                 ) -> None:
        self.cores = cores
        self.memory = memory
        self.port = free_port()
        self.ui_port = free_port()
        self._own_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="batchscore-spark-"))
        self.processes: list[subprocess.Popen] = []

    @property
    def master_url(self) -> str:
        return f"spark://{LOOPBACK}:{self.port}"

    def __enter__(self) -> StandaloneCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        env = {**os.environ, "SPARK_LOCAL_IP": LOOPBACK, "SPARK_LOG_DIR": str(self.work_dir),
               "SPARK_WORKER_DIR": str(self.work_dir / "worker")}
        self.processes.append(self._launch(
            ["org.apache.spark.deploy.master.Master", "--host", LOOPBACK,
             "--port", str(self.port), "--webui-port", str(self.ui_port)], "master", env))
        self.processes.append(self._launch(
            ["org.apache.spark.deploy.worker.Worker", self.master_url, "--host", LOOPBACK,
             "--port", str(free_port()), "--webui-port", str(free_port()),
             "--cores", str(self.cores), "--memory", self.memory,
             "--work-dir", str(self.work_dir / "worker")], "worker", env))
        self.wait_for_worker()
        logger.info("Spark standalone master at %s with one worker (%d core(s), %s)",
                    self.master_url, self.cores, self.memory)

    def _launch(self, args: list[str], name: str, env: dict[str, str]) -> subprocess.Popen:
        log = (self.work_dir / f"{name}.log").open("wb")
        # Its own session: stopping it reaches the JVM that spark-class starts.
        return subprocess.Popen([spark_bin("spark-class"), *args], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_for_worker(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a Spark daemon exited with {process.returncode}; "
                                       f"see the logs in {self.work_dir}")
            try:
                with urllib.request.urlopen(f"http://{LOOPBACK}:{self.ui_port}/json/",
                                            timeout=2) as response:
                    state = json.load(response)
                if state.get("aliveworkers", 0) >= 1:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"no Spark worker registered with {self.master_url} within "
                           f"{START_TIMEOUT_SECONDS}s; see the logs in {self.work_dir}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with StandaloneCluster() as cluster:
        print(f"Spark master: {cluster.master_url} (UI http://{LOOPBACK}:{cluster.ui_port});"
              f" submit with: spark-submit --master {cluster.master_url} jobs/scoring/score.py ...",
              flush=True)
        print("Ctrl-C stops the master and the worker.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
