"""The long runs' memory watch: the machine's available memory with its guard, and the
peak resident memory of a watched process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from jobs.bench.memory import MachineMemory

MIB = 1024**2


GUARDED = """
import time
from jobs.bench.memory import LowMemoryError, MachineMemory, available_bytes
memory = MachineMemory(guard_bytes=available_bytes() + 64 * 1024**4, interval=0.05)
memory.step = "turn 2: write aside in Redis"
started = time.monotonic()
try:
    with memory:
        time.sleep(30)
except LowMemoryError as error:
    print(f"stopped after {time.monotonic() - started:.1f}s: {error}")
"""


def test_a_guard_above_the_available_memory_stops_the_run_and_names_the_step() -> None:
    # In a process of its own: the guard interrupts its process's main thread.
    done = subprocess.run([sys.executable, "-c", GUARDED], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("stopped after ")
    assert float(done.stdout.split()[2].rstrip("s:")) < 10
    assert "during turn 2: write aside in Redis" in done.stdout
    assert "the run was stopped there" in done.stdout


def test_without_crossing_the_guard_it_keeps_each_steps_low_point_and_the_watched_peak(
        ) -> None:
    # A process that holds 300 MiB, touched page by page, for a few seconds.
    holder = subprocess.Popen([sys.executable, "-c",
                               "import time; b = bytearray(300 * 1024**2); "
                               "b[::4096] = b'x' * len(b[::4096]); time.sleep(3)"])
    try:
        memory = MachineMemory(guard_bytes=0, watch_pid=holder.pid, interval=0.05)
        memory.step = "one step"
        with memory:
            time.sleep(0.3)
            memory.step = "another"
            holder.wait(timeout=30)
            time.sleep(0.3)
    finally:
        holder.kill()
        holder.wait()
    assert memory.tripped is None
    assert set(memory.lowest) == {"one step", "another"}
    total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    assert all(0 < low <= total for low in memory.lowest.values())
    assert max(memory.watched_peak.values()) >= 300 * MIB
