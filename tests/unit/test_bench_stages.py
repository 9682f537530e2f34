"""The scale run's stage timer: a step that runs in every turn keeps each turn's time."""

from __future__ import annotations

import time

from jobs.bench.scale import Stages


def test_a_step_run_in_every_turn_keeps_each_turns_time(capsys) -> None:
    stages = Stages(label="setup: ")
    for pause in (0.05, 0.0, 0.1):
        assert stages.run("write the keys as a protocol file",
                          lambda pause=pause: time.sleep(pause) or pause) == pause
    stages.run("synthetic model", lambda: None)
    assert list(stages.every) == ["write the keys as a protocol file", "synthetic model"]
    first, second, third = stages.every["write the keys as a protocol file"]
    assert first >= 0.05 and second < 0.05 and third >= 0.1
    assert stages.seconds["write the keys as a protocol file"] == third
    assert len(stages.every["synthetic model"]) == 1
    assert capsys.readouterr().out.count("  write the keys as a protocol file: ") == 3
