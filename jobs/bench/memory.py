"""Memory during long runs, sampled from /proc: the peak resident memory of this
process and everything it started (Spark's JVM, its Python workers), and the
machine's available memory with a guard that stops a run before it runs out."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def tree_rss_bytes(root: int) -> int:
    """Resident bytes of ``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        pid, ppid = int(entry.name), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * PAGE_BYTES
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


class PeakMemory:
    """Samples the tree's resident memory in a thread while in its ``with`` block."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_bytes(os.getpid()))
            time.sleep(self.interval)


def available_bytes() -> int:
    """The machine's ``MemAvailable``: what can be allocated without swapping."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def rss_bytes(pid: int) -> int:
    """Resident bytes of one process (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


class LowMemoryError(RuntimeError):
    """The machine's available memory fell below the guard while a long run went on."""


class MachineMemory:
    """Watches the machine's available memory in a thread while in its ``with`` block:
    the lowest seen, the peak resident memory of one more process to watch (a server
    the run writes to), and a guard. When available memory falls below ``guard_bytes``
    the thread interrupts the main thread (SIGINT, which also ends a waited-for child),
    so the run stops and cleans up instead of going on into page reclaim; a step
    blocked in a server's call stops when that call returns. ``__exit__`` then raises
    ``LowMemoryError`` naming the step and the time."""

    def __init__(self, guard_bytes: int, watch_pid: int | None = None,
                 interval: float = 0.5) -> None:
        self.guard_bytes = guard_bytes
        self.watch_pid = watch_pid
        self.interval = interval
        self.step = "the start"
        self.lowest: dict[str, int] = {}
        self.watched_peak: dict[str, int] = {}
        self.tripped: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MachineMemory:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.tripped is not None and (kind is None
                                         or issubclass(kind, KeyboardInterrupt)):
            raise LowMemoryError(self.tripped) from None

    def _run(self) -> None:
        while not self._stop.is_set():
            step, available = self.step, available_bytes()
            self.lowest[step] = min(self.lowest.get(step, available), available)
            if self.watch_pid is not None:
                self.watched_peak[step] = max(self.watched_peak.get(step, 0),
                                              rss_bytes(self.watch_pid))
            if available < self.guard_bytes and self.tripped is None:
                self.tripped = (
                    f"the machine's available memory fell to {available / 1024**3:.2f} GiB "
                    f"(guard {self.guard_bytes / 1024**3:.2f} GiB) at "
                    f"{time.strftime('%H:%M:%S')}, during {step}; the run was stopped "
                    f"there, once that step's call in progress returned")
                os.kill(os.getpid(), signal.SIGINT)
            time.sleep(self.interval)
