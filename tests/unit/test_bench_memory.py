"""The long runs' memory watch: the machine's available memory with its guard, and the
peak resident memory of a watched process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.bench.memory import LowMemoryError, MachineMemory, available_bytes

MIB = 1024**2


def test_a_guard_above_the_available_memory_stops_the_run_and_names_the_step() -> None:
    memory = MachineMemory(guard_bytes=available_bytes() + 64 * 1024**4, interval=0.05)
    memory.step = "turn 2: write aside in Redis"
    started = time.monotonic()
    with pytest.raises(LowMemoryError) as raised, memory:
        time.sleep(30)
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert "during turn 2: write aside in Redis" in message
    assert "the run was stopped there" in message


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
