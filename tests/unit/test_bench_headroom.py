"""The long runs' headroom watch: the machine's available memory and the free disk under
a folder, each with its guard, and the peak resident memory of a watched process. A guard
interrupts the main thread within seconds while it sleeps in the block (the block would
sleep 30 s)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from jobs.bench.headroom import MachineHeadroom

MIB = 1024**2


GUARDED = """
import sys
import time
from pathlib import Path
from jobs.bench.headroom import LowHeadroomError, MachineHeadroom
memory_guard, disk_guard = (int(sys.argv[1]) * 1024**2, int(sys.argv[2]) * 1024**2)
headroom = MachineHeadroom(guard_bytes=memory_guard, interval=0.05, disk=Path(sys.argv[3]),
                           disk_guard_bytes=disk_guard)
if sys.argv[4] == "slow start":
    # The thread's first sample, and its trip, come before its start returns.
    start = headroom._thread.start
    headroom._thread.start = lambda: (start(), time.sleep(1))
headroom.step = "turn 2: write aside in Redis"
started = time.monotonic()
try:
    with headroom:
        try:
            time.sleep(30)
        except KeyboardInterrupt:
            if sys.argv[4] == "other error":  # as Spark's SIGINT handler can end a call
                raise RuntimeError("the interrupted call failed") from None
            raise
except LowHeadroomError as error:
    print(f"stopped after {time.monotonic() - started:.1f}s: {error}"
          f" (cause: {error.__cause__!r})")
"""

TIB_IN_MIB = 1024**2


def guarded(memory_guard_mib: int, disk_guard_mib: int, folder: Path, mode: str = "") -> str:
    """What a process of its own printed after watching with these guards (the guard
    interrupts its process's main thread)."""
    done = subprocess.run([sys.executable, "-c", GUARDED, str(memory_guard_mib),
                           str(disk_guard_mib), str(folder), mode],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_guard_above_the_available_memory_stops_the_run_and_names_the_step(
        tmp_path: Path) -> None:
    out = guarded(64 * TIB_IN_MIB, 0, tmp_path)
    assert out.startswith("stopped after ")
    assert float(out.split()[2].rstrip("s:")) < 10
    assert "the machine's available memory fell to" in out
    assert "during turn 2: write aside in Redis" in out
    assert "the run was stopped there" in out


def test_a_guard_crossed_before_the_watch_has_started_still_stops_the_run_by_its_error(
        tmp_path: Path) -> None:
    out = guarded(64 * TIB_IN_MIB, 0, tmp_path, mode="slow start")
    assert out.startswith("stopped after ")
    assert "the machine's available memory fell to" in out


def test_a_guard_whose_interrupt_ends_the_block_as_another_error_still_names_the_guard(
        tmp_path: Path) -> None:
    out = guarded(64 * TIB_IN_MIB, 0, tmp_path, mode="other error")
    assert out.startswith("stopped after ")
    assert "the machine's available memory fell to" in out
    assert out.rstrip().endswith("(cause: RuntimeError('the interrupted call failed'))")


def test_a_guard_above_the_free_disk_stops_the_run_and_names_the_folder_and_step(
        tmp_path: Path) -> None:
    out = guarded(0, 64 * TIB_IN_MIB, tmp_path)
    assert out.startswith("stopped after ")
    assert float(out.split()[2].rstrip("s:")) < 10
    assert f"the free disk under {tmp_path} fell to" in out
    assert "(guard 65536.00 GiB)" in out
    assert "during turn 2: write aside in Redis" in out


def test_without_crossing_the_guards_it_keeps_each_steps_low_points_and_the_watched_peak(
        tmp_path: Path) -> None:
    # A process that holds 300 MiB, touched page by page, for a few seconds.
    holder = subprocess.Popen([sys.executable, "-c",
                               "import time; b = bytearray(300 * 1024**2); "
                               "b[::4096] = b'x' * len(b[::4096]); time.sleep(3)"])
    try:
        headroom = MachineHeadroom(guard_bytes=0, watch_pid=holder.pid, interval=0.05,
                                   disk=tmp_path)
        headroom.step = "one step"
        with headroom:
            time.sleep(0.3)
            headroom.step = "another"
            holder.wait(timeout=30)
            time.sleep(0.3)
    finally:
        holder.kill()
        holder.wait()
    assert headroom.tripped is None
    assert set(headroom.lowest) == set(headroom.lowest_disk) == {"one step", "another"}
    total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    assert all(0 < low <= total for low in headroom.lowest.values())
    disk_size = shutil.disk_usage(tmp_path).total
    assert all(0 < low <= disk_size for low in headroom.lowest_disk.values())
    assert max(headroom.watched_peak.values()) >= 300 * MIB
