"""The values the analytics queries return."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from identityres._model import Identifier
from identityres.analytics._inputs import nearest_rank


@attrs.frozen
class FunnelResult:
    """One funnel (docs/analytics.md). Every list has one entry per step, in step order.

    ``counts``: people (``count="uniques"``) or entries (``"totals"``) reaching each step.
    ``conversion_from_first`` / ``conversion_from_previous``: ``counts[k] / counts[0]`` and
    ``counts[k] / counts[k - 1]`` (1.0 for the first step when anyone entered; 0.0 where the
    denominator is 0). ``median_seconds`` / ``p90_seconds``: time from the step-1 event to
    step *k*, nearest-rank percentiles over the people (entries) reaching step *k*; ``None``
    for the first step and where nobody reached it."""

    steps: tuple[str, ...]
    counts: list[int]
    conversion_from_first: list[float]
    conversion_from_previous: list[float]
    median_seconds: list[float | None]
    p90_seconds: list[float | None]

    @classmethod
    def build(cls, steps: Sequence[str], durations: Sequence[Sequence[float]]) -> FunnelResult:
        """From the durations of everyone reaching each step (step 1: zeros)."""
        return cls.from_counts(
            steps,
            [len(d) for d in durations],
            [None if k == 0 else nearest_rank(d, 50) for k, d in enumerate(durations)],
            [None if k == 0 else nearest_rank(d, 90) for k, d in enumerate(durations)],
        )

    @classmethod
    def from_counts(
        cls,
        steps: Sequence[str],
        counts: list[int],
        medians: list[float | None],
        p90s: list[float | None],
    ) -> FunnelResult:
        first = counts[0]
        return cls(
            tuple(steps),
            counts,
            [c / first if first else 0.0 for c in counts],
            [
                (1.0 if c else 0.0) if k == 0 else (c / counts[k - 1] if counts[k - 1] else 0.0)
                for k, c in enumerate(counts)
            ],
            medians,
            p90s,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return attrs.asdict(self, recurse=False) | {"steps": list(self.steps)}


@attrs.frozen
class JourneyEvent:
    """One event of a person's journey, with the identifier that made it theirs."""

    timestamp: datetime
    event_id: str
    type: str
    name: str
    #: the event's highest-priority identifier that the graph holds: where it came from
    identifier: Identifier
    properties: Mapping[str, Any] | None
    context: Mapping[str, Any] | None
