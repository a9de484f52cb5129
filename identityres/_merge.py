"""The one order-independent merge of keyed writes (traits R6, companies R7 in
docs/merge-rules.md): per key, the write with the greatest ``(timestamp, event_id)`` wins —
the smallest for ``set_once`` traits. Every store, the engine and profile building use
these two functions, so "newest wins" means the same thing everywhere."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

__all__ = ["keep", "winners"]

K = TypeVar("K")
V = TypeVar("V")


class _Keyed(Protocol):
    @property
    def ts(self) -> float: ...

    @property
    def event_id(self) -> str: ...


R = TypeVar("R", bound=_Keyed)


def keep(
    best: dict[K, tuple[float, str, V]],
    key: K,
    ts: float,
    event_id: str,
    value: V,
    earliest: bool = False,
) -> bool:
    """Put ``(ts, event_id, value)`` under ``key`` if it beats what is there: a greater key
    (``earliest``: a smaller one). Returns whether it did."""
    old = best.get(key)
    if old is not None:
        mine = (ts, event_id)
        theirs = (old[0], old[1])
        if not (mine < theirs if earliest else theirs < mine):
            return False
    best[key] = (ts, event_id, value)
    return True


def winners(
    rows: Iterable[R],
    key: Callable[[R], K],
    earliest: Callable[[R], bool] = lambda row: False,
) -> dict[K, R]:
    """Per ``key(row)``, the winning row of ``rows`` (see :func:`keep`)."""
    best: dict[K, tuple[float, str, R]] = {}
    for row in rows:
        keep(best, key(row), row.ts, row.event_id, row, earliest(row))
    return {k: entry[2] for k, entry in best.items()}
