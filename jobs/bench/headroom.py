"""Headroom during long runs: the peak resident memory of this process and
everything it started (Spark's JVM, its Python workers), sampled from /proc, and
the machine's available memory and free disk, with guards that stop a run before
either runs out."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
GIB = 1024**3


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


class LowHeadroomError(RuntimeError):
    """The machine's available memory, or the free disk under the run's folder, fell below
    its guard while a long run went on."""


class MachineHeadroom:
    """Watches the machine's available memory, and with ``disk`` the free space of the
    file system holding that folder, in a thread while in its ``with`` block: the lowest
    of each seen per step, the peak resident memory of one more process to watch (a
    server the run writes to), and a guard on each. When either falls below its guard
    the thread interrupts the main thread (SIGINT, sent to that thread; it also ends a
    waited-for child), so the run stops and cleans up instead of going on into page
    reclaim or a full disk (on which Redis refuses writes and PostgreSQL stops); a step
    blocked in a server's call stops when that call returns. ``__exit__`` then raises
    ``LowHeadroomError`` naming what fell, the step and the time, whatever error the
    interrupt ended the block with (chained)."""

    def __init__(self, guard_bytes: int, watch_pid: int | None = None,
                 interval: float = 0.5, disk: Path | None = None,
                 disk_guard_bytes: int = 0) -> None:
        self.guard_bytes = guard_bytes
        self.watch_pid = watch_pid
        self.interval = interval
        self.disk = disk
        self.disk_guard_bytes = disk_guard_bytes
        self.step = "the start"
        self.lowest: dict[str, int] = {}
        self.lowest_disk: dict[str, int] = {}
        self.watched_peak: dict[str, int] = {}
        self.tripped: str | None = None
        self._stop = threading.Event()
        # Set once __enter__ has started the thread: a guard crossed at the first sample
        # interrupts the block, not the thread's start.
        self._armed = threading.Event()
        # Where the main thread was (its innermost frame and instruction) when it was last
        # interrupted; None before the first interrupt, and once it has moved on.
        self._interrupted_at: tuple[FrameType, int] | None = None
        self._moved_on = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MachineHeadroom:
        self._thread.start()
        self._armed.set()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._interrupted_at = None
        if self.tripped is None:
            return
        if kind is None or issubclass(kind, KeyboardInterrupt):
            raise LowHeadroomError(self.tripped) from None
        # The interrupt can end the block as another error: Spark's SIGINT handler cancels
        # its jobs through the call it interrupted, and that call fails. The guard is still
        # why the run stopped.
        raise LowHeadroomError(self.tripped) from error

    def _run(self) -> None:
        while not self._stop.is_set():
            step, available = self.step, available_bytes()
            self.lowest[step] = min(self.lowest.get(step, available), available)
            if self.watch_pid is not None:
                self.watched_peak[step] = max(self.watched_peak.get(step, 0),
                                              rss_bytes(self.watch_pid))
            if available < self.guard_bytes:
                self._trip(f"the machine's available memory fell to {available / GIB:.2f} "
                           f"GiB (guard {self.guard_bytes / GIB:.2f} GiB)", step)
            if self.disk is not None:
                free = shutil.disk_usage(self.disk).free
                self.lowest_disk[step] = min(self.lowest_disk.get(step, free), free)
                if free < self.disk_guard_bytes:
                    self._trip(f"the free disk under {self.disk} fell to {free / GIB:.2f} "
                               f"GiB (guard {self.disk_guard_bytes / GIB:.2f} GiB)", step)
            if self.tripped is not None and not self._moved_on:
                self._interrupt()
            time.sleep(self.interval)

    def _trip(self, what: str, step: str) -> None:
        if self.tripped is None:
            self.tripped = (f"{what} at {time.strftime('%H:%M:%S')}, during {step}; the run "
                            f"was stopped there, once that step's call in progress returned")

    def _interrupt(self) -> None:
        """Sends SIGINT to the main thread itself, and again at each sample while that
        thread is still where the last one found it. A signal sent to the process may be
        taken by this thread, and one that lands just before the main thread enters a
        sleep or a wait is handled without waking it: either way the main thread would go
        on until that call returns. Once it has moved on, the interrupt has reached it (it
        raises at its next instruction), and no more are sent, none into its clean-up.
        SIGINT's handler stays whatever the run set (Spark's cancels its jobs)."""
        self._armed.wait()
        main = threading.main_thread().ident
        assert main is not None
        frame = sys._current_frames().get(main)
        where = (frame, frame.f_lasti) if frame is not None else None
        if self._interrupted_at is not None and where != self._interrupted_at:
            self._moved_on, self._interrupted_at = True, None
            return
        signal.pthread_kill(main, signal.SIGINT)
        self._interrupted_at = where
        self._moved_on = where is None
