"""The warn and retrain levels of ``schemas/contracts.json`` → ``monitoring``, and which a
run's metrics cross.

Each entry of that section names a metric (and optionally a segment), the
direction in which it is bad (``above`` or ``below``), and two levels: crossing
``warn`` raises an alert; crossing ``retrain`` also signals that the serving
model should be retrained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["above", "below"]


class ThresholdError(ValueError):
    """The ``monitoring`` section of the contracts is malformed."""


@dataclass(frozen=True)
class Level:
    """One metric's levels. ``segment`` ``None`` means every segment of the metric."""

    metric: str
    segment: str | None
    direction: Direction
    warn: float
    retrain: float | None

    def crossed(self, value: float) -> tuple[str, float] | None:
        """``('retrain', level)`` or ``('warn', level)`` if ``value`` crosses one, else ``None``."""
        def beyond(threshold: float) -> bool:
            return value > threshold if self.direction == "above" else value < threshold

        if self.retrain is not None and beyond(self.retrain):
            return "retrain", self.retrain
        if beyond(self.warn):
            return "warn", self.warn
        return None


@dataclass(frozen=True)
class Crossing:
    """A metric of a run beyond one of its levels."""

    metric: str
    segment: str
    value: float
    level: Literal["warn", "retrain"]
    threshold: float
    direction: Direction

    def describe(self) -> str:
        where = f" ({self.segment})" if self.segment else ""
        side = "above" if self.direction == "above" else "below"
        return (f"{self.metric}{where} = {self.value:.4g} is {side} its {self.level} "
                f"level {self.threshold:g}")


def levels(contracts: Mapping[str, Any]) -> list[Level]:
    """The levels in ``contracts['monitoring']['levels']``, checked."""
    section = contracts.get("monitoring", {})
    found = []
    for index, entry in enumerate(section.get("levels", [])):
        where = f"monitoring.levels[{index}]"
        try:
            metric = str(entry["metric"])
            direction = entry["direction"]
            warn = float(entry["warn"])
            retrain = None if entry.get("retrain") is None else float(entry["retrain"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ThresholdError(f"{where} needs metric, direction and a numeric warn "
                                 f"(and optionally retrain): {exc}") from None
        if direction not in ("above", "below"):
            raise ThresholdError(f"{where}.direction must be 'above' or 'below', "
                                 f"got {direction!r}")
        if retrain is not None and (retrain < warn if direction == "above" else retrain > warn):
            raise ThresholdError(f"{where} ({metric}): the retrain level {retrain:g} must be "
                                 f"beyond the warn level {warn:g} in the {direction} direction")
        found.append(Level(metric=metric, segment=entry.get("segment"), direction=direction,
                           warn=warn, retrain=retrain))
    return found


def crossings(metrics: Mapping[tuple[str, str], float], held_to: list[Level]) -> list[Crossing]:
    """The crossings among ``metrics`` (``(metric, segment) -> value``), worst level first."""
    found = []
    for (metric, segment), value in sorted(metrics.items()):
        for level in held_to:
            if level.metric != metric or level.segment not in (None, segment):
                continue
            crossed = level.crossed(value)
            if crossed is not None:
                found.append(Crossing(metric=metric, segment=segment, value=value,
                                      level=crossed[0], threshold=crossed[1],
                                      direction=level.direction))
    return sorted(found, key=lambda c: (c.level != "retrain", c.metric, c.segment))
