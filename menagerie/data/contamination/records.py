"""What the gate's stages hand up: pairs found (`Match`), pairs worth embedding (`Candidate`), and `Run`, the counts
and phase timings of one gate run (the report's candidate counts; what bench/contamination.py prints)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Match:
    """A (training row, eval item) pair a method found or its guard vetoed. `score`: the share of the item's
    n-grams (or code windows) in the row, or the cosine; `window`: the text embedded (embedding method);
    `reason`: why the guard vetoed it (None: a match)."""

    row: int
    item: int
    score: float
    window: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A (training row, eval item) pair the lexical filter passes to the embedding: `window` is the text to embed,
    `rank` orders candidates across rows (higher first; see candidates.py); `reason`: a guard veto kept for review."""

    row: int
    item: int
    rank: float
    window: str
    reason: str | None = None

    def order(self) -> tuple[float, int, int, str]:
        """Best ranked first; ties by row, item and window (what `sorted(..., key=Candidate.order)` uses)."""
        return (-self.rank, self.row, self.item, self.window)


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    start: float  # time.perf_counter() seconds
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Run:
    """Counts and timings of one gate run, filled by the stages it is passed to: `counts` (candidate pairs, embedded
    windows, ...: see candidates.py and embedding.py) and `phases`, each step's start and end in order."""

    counts: dict[str, int] = field(default_factory=dict)
    phases: list[Phase] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases.append(Phase(name, start, time.perf_counter()))

    def add(self, key: str, count: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + count

    def seconds(self) -> dict[str, float]:
        """Seconds per phase name (a name timed twice: summed), in the order the phases first ran."""
        out: dict[str, float] = {}
        for phase in self.phases:
            out[phase.name] = out.get(phase.name, 0.0) + phase.seconds
        return out
