"""MLeap's own JVM runtime (0.20.0, Scala 2.12), as a second scorer that checks our bundles.

The Java program in ``jvm/`` loads bundles with MLeap's Java DSL and scores
LeapFrames with them; ``make install`` fetches its jars from Maven Central and
builds it. ``MleapRuntime`` starts it as a subprocess (one JVM for many
requests), talks to it over stdin and stdout, and stops it on ``close``.

The protocol: a request is two lines, the bundle's path and the LeapFrame as
one line of JSON; the answer is one line, ``ok <LeapFrame JSON>`` or ``error
<MLeap's message>``. The program says ``ready`` once it has started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from jobs.bundles.format import BundleError
from jobs.bundles.leapframe import LeapFrame, frame_from_json

logger = logging.getLogger(__name__)

JVM_PROJECT = Path(__file__).resolve().parent / "jvm"
MAIN_CLASS = "batchscore.mleap.ScoreServer"
MLEAP_RUNTIME_VERSION = "0.20.0"
START_TIMEOUT_SECONDS = 60.0
REQUEST_TIMEOUT_SECONDS = 120.0


class MleapRuntimeError(RuntimeError):
    """Java or the built MLeap runtime is missing, or the JVM stopped answering."""


class MleapRefusedError(BundleError):
    """MLeap's runtime could not load the bundle or score the frame; carries MLeap's message."""


@dataclass(frozen=True)
class RuntimeScorer:
    """One bundle scored by a running MleapRuntime; quacks like ``LoadedBundle``."""

    runtime: MleapRuntime
    path: Path

    def transform(self, frame: LeapFrame) -> LeapFrame:
        return self.runtime.transform(self.path, frame)


class MleapRuntime:
    """MLeap's JVM runtime in a process of its own, started by ``start`` and ended by ``close``.

    Use it as a context manager. Loaded bundles stay cached in the JVM (keyed by
    path, reloaded when the file changes), so scoring many frames costs one JVM start.
    """

    def __init__(self, project: Path = JVM_PROJECT, java: str | None = None) -> None:
        self.project = project
        self.java = java
        self._process: subprocess.Popen[str] | None = None
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._stderr_tail: deque[str] = deque(maxlen=40)
        self._lock = threading.Lock()

    def command(self) -> list[str]:
        """The java command line; raises MleapRuntimeError naming what is missing."""
        java = self.java or shutil.which("java")
        if java is None or not os.access(java, os.X_OK):
            where = f"there is no program {java}" if java else "'java' is not on PATH"
            raise MleapRuntimeError(f"MLeap's JVM runtime needs Java 17 or newer, and {where}")
        classes = self.project / "target" / "classes"
        jars = self.project / "target" / "lib"
        if not (classes / "batchscore" / "mleap" / "ScoreServer.class").is_file() \
                or not any(jars.glob("mleap-runtime_*.jar")):
            raise MleapRuntimeError(f"MLeap's JVM runtime is not built (no {classes} and "
                                     f"{jars}); run `make install`, which fetches MLeap's "
                                     f"jars and builds it")
        return [java, "-cp", f"{classes}:{jars}/*", MAIN_CLASS]

    @property
    def pid(self) -> int | None:
        """The JVM's process id while it is started, else None."""
        return self._process.pid if self._process is not None else None

    def start(self) -> MleapRuntime:
        """Start the JVM and wait until MLeap is loaded."""
        if self._process is not None:
            return self
        started = time.monotonic()
        self._process = subprocess.Popen(
            self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1)
        threading.Thread(target=self._read_answers, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        ready = self._next_answer(START_TIMEOUT_SECONDS, "start")
        if ready != "ready":
            self.close()
            raise MleapRuntimeError(f"MLeap's JVM runtime did not start: {ready!r}"
                                     f"{self._stderr_text()}")
        logger.info("started MLeap %s's JVM runtime (pid %d) in %.1fs", MLEAP_RUNTIME_VERSION,
                    self._process.pid, time.monotonic() - started)
        return self

    def scorer(self, bundle: Path) -> RuntimeScorer:
        """The bundle as something with ``transform(frame)``, like a loaded Python bundle."""
        return RuntimeScorer(self, bundle)

    def transform(self, bundle: Path, frame: LeapFrame) -> LeapFrame:
        """Score ``frame`` with the bundle (zip or directory) in MLeap's runtime.

        Raises MleapRefusedError with MLeap's message when it cannot load the bundle or
        score the frame, MleapRuntimeError when the JVM is gone or does not answer.
        """
        path = str(Path(bundle).resolve())
        if "\n" in path or "\r" in path:
            raise BundleError(f"a bundle path with a line break cannot be sent: {path!r}")
        with self._lock:
            process = self._running()
            assert process.stdin is not None
            try:
                process.stdin.write(path + "\n" + json.dumps(frame.to_json()) + "\n")
                process.stdin.flush()
            except BrokenPipeError:
                raise MleapRuntimeError(f"MLeap's JVM runtime has exited"
                                         f"{self._stderr_text()}") from None
            answer = self._next_answer(REQUEST_TIMEOUT_SECONDS, f"scoring with {bundle}")
        status, _, body = answer.partition(" ")
        if status == "error":
            raise MleapRefusedError(f"MLeap {MLEAP_RUNTIME_VERSION}'s runtime refused {bundle}: "
                               f"{body}")
        if status != "ok":
            raise MleapRuntimeError(f"MLeap's JVM runtime answered {answer[:200]!r}")
        scored = frame_from_json(json.loads(body), f"MLeap's answer for {bundle}")
        logger.info("scored %d rows with bundle %s in MLeap's runtime", len(scored.rows), bundle)
        return scored

    def close(self) -> None:
        """Close the JVM's stdin (it exits), and kill it if it has not within 10 seconds."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        logger.info("stopped MLeap's JVM runtime (pid %d, exit %s)", process.pid,
                    process.returncode)

    def __enter__(self) -> MleapRuntime:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ the pipes

    def _running(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise MleapRuntimeError("MLeap's JVM runtime is not started")
        if self._process.poll() is not None:
            raise MleapRuntimeError(f"MLeap's JVM runtime has exited with code "
                                     f"{self._process.returncode}{self._stderr_text()}")
        return self._process

    def _next_answer(self, timeout: float, doing: str) -> str:
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise MleapRuntimeError(f"MLeap's JVM runtime did not answer within {timeout:g}s "
                                     f"({doing}){self._stderr_text()}") from None
        if answer is None:
            code = self._process.wait(timeout=10) if self._process is not None else None
            raise MleapRuntimeError(f"MLeap's JVM runtime exited (code {code}) while "
                                     f"{doing}{self._stderr_text()}")
        return answer

    def _read_answers(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        for line in process.stdout:
            self._answers.put(line.rstrip("\n"))
        self._answers.put(None)

    def _read_stderr(self) -> None:
        # Drained all along so the JVM never blocks on a full pipe; the tail goes into errors.
        process = self._process
        assert process is not None and process.stderr is not None
        for line in process.stderr:
            self._stderr_tail.append(line.rstrip("\n"))

    def _stderr_text(self) -> str:
        lines = [line for line in self._stderr_tail if line.strip()]
        return "; its stderr ends: " + " | ".join(lines[-5:]) if lines else ""


def score_file(bundle_path: Path, frame_path: Path) -> LeapFrame:
    """Score the LeapFrame JSON file with the bundle in MLeap's runtime, in a JVM started and
    stopped for this call; the CLI's ``bundle score --runtime jvm``."""
    from jobs.bundles.leapframe import read_frame

    if not bundle_path.exists():
        raise FileNotFoundError(f"no bundle at {bundle_path}")
    frame = read_frame(frame_path)
    with MleapRuntime() as runtime:
        return runtime.transform(bundle_path, frame)
