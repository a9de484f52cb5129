"""Threading model (docs/concepts.md): an ``IdentityGraph`` may be shared by threads; writes are
serialized by the graph's lock, so several threads writing one graph end in the state the
reference resolver gives for all their events."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

import identityres as ir
from identityres.storage import MemoryStore
from identityres.testing import ReferenceResolver, snapshot, snapshot_diff


def workload(seed: int, n_users: int = 60) -> list[Any]:
    """Users on shared and own devices, resets, traits; out-of-order timestamps."""
    rnd = random.Random(seed)
    events: list[Any] = []
    for i in range(400):
        u = f"u{rnd.randrange(n_users)}"
        a = f"a{rnd.randrange(n_users * 2)}"
        ts = rnd.randrange(1000)
        kind = rnd.random()
        if kind < 0.5:
            events.append(
                ir.Identify(
                    user_id=u,
                    anonymous_id=a,
                    timestamp=ts,
                    event_id=f"i{i}",
                    traits={"n": rnd.randrange(5)},
                )
            )
        elif kind < 0.8:
            events.append(ir.Track(event="x", anonymous_id=a, timestamp=ts, event_id=f"t{i}"))
        elif kind < 0.9:
            events.append(ir.Reset(anonymous_id=a, timestamp=ts, event_id=f"r{i}"))
        else:
            events.append(
                ir.IdentifyCompany(
                    company_id=f"c{rnd.randrange(3)}", user_id=u, timestamp=ts, event_id=f"c{i}"
                )
            )
    return events


@pytest.mark.parametrize("in_place", [True, False])
def test_threads_writing_one_graph_end_in_the_reference_state(in_place: bool) -> None:
    events = workload(7)
    graph = ir.IdentityGraph(store=MemoryStore(in_place=in_place))
    chunks = [events[i::4] for i in range(4)]  # overlapping identifiers across threads
    errors: list[BaseException] = []
    start = threading.Barrier(len(chunks))

    def writer(chunk: list[Any]) -> None:
        try:
            start.wait()
            for j in range(len(chunk)):
                if j % 3 == 0:
                    graph.ingest(chunk[j : j + 3])  # batches and single writes interleave
                if j % 7 == 0:
                    graph.resolve(user_id="u1")  # reads while others write
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    reference = ReferenceResolver()
    reference.ingest(events)
    want, got = snapshot(reference), snapshot(graph)
    assert want == got, snapshot_diff(want, got)
