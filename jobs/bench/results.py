"""What a benchmark pair reports, and the table and JSON it is printed as."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pair:
    """One side-by-side measurement.

    ``ratio`` is how many times better ours is: ours / peer for rates,
    peer / ours for times and sizes (``higher_is_better`` False), so a ratio
    above 1 always favours batchscore.
    """

    name: str
    ours: float
    peer: float
    unit: str
    ratio: float
    peer_name: str = ""
    target: float | None = None
    note: str = ""

    @classmethod
    def of(cls, name: str, ours: float, peer: float, unit: str, *, higher_is_better: bool,
           peer_name: str, target: float | None = None, note: str = "") -> Pair:
        if higher_is_better:
            ratio = ours / peer if peer else float("inf")
        else:
            ratio = peer / ours if ours else float("inf")
        return cls(name=name, ours=ours, peer=peer, unit=unit, ratio=ratio,
                   peer_name=peer_name, target=target, note=note)


def table(pairs: list[Pair]) -> str:
    rows = [("pair", "ours", "peer", "unit", "ratio", "target", "peer is")]
    for pair in pairs:
        rows.append((pair.name, f"{pair.ours:,.4g}", f"{pair.peer:,.4g}", pair.unit,
                     f"{pair.ratio:.2f}x",
                     "" if pair.target is None else
                     f">= {pair.target:g}x {'ok' if pair.ratio >= pair.target else 'MISSED'}",
                     pair.peer_name))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  {pair.name}: {pair.note}" for pair in pairs if pair.note]
    return "\n".join(lines + (["", "notes:", *notes] if notes else []))


def write_json(pairs: list[Pair], path: Path, extra: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(pair) for pair in pairs], indent=2) + "\n")
    if extra is not None:
        path.with_name(path.stem + "-details.json").write_text(json.dumps(extra, indent=2) + "\n")
