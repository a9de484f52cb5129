"""The graph suite: hand-written event sequences run through ``IdentityGraph(store=...)``.

Each :class:`GraphSuite` case writes its events to two new stores, one batch per event and
all in one batch, and checks that both read like a plain in-memory ``IdentityGraph`` fed the
same events (and, when the store gives a second handle, that a graph on that handle reads
the same): a quickstart, a late event that replays its component, resets and shared devices,
tight limits, traits and companies, duplicates, conflicts and blocked values, the operator's
merge, split and forget, and hostile values. One more case checks that the fingerprints the
graph writes for its events are the ones ``Batch.seen`` gives back to another graph writing
the same store through batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from identityres._graph import IdentityGraph
from identityres._model import (
    Alias,
    Forget,
    Identifier,
    Identify,
    IdentifyCompany,
    Merge,
    Reset,
    Split,
    Track,
)
from identityres._rules import Rules
from identityres.errors import ValidationError
from identityres.testing.conformance._fixtures import (
    SuiteBase,
    _assert_same,
    _check,
    _hostile_values,
    _ProxyStore,
    _require,
)

__all__ = ["GraphSuite"]


class GraphSuite(SuiteBase):
    """The cases that drive ``IdentityGraph(store=...)`` with hand-written events."""

    def _check_graph(
        self, tmp_path: Path, events: Sequence[Any], rules: Rules | None = None
    ) -> None:
        """The events one batch each, and all in one batch, on two new stores: both must read
        like the in-memory graph (and like each other)."""
        rules = rules or Rules()
        expected = IdentityGraph(rules)
        expected.ingest(events, on_error="skip")
        for how in ("one batch per event", "one batch"):
            store = self._new_store(tmp_path, rules)
            try:
                actual = IdentityGraph(rules, store=store)
                if how == "one batch":
                    actual.ingest(events, on_error="skip")
                else:
                    for event in events:
                        with contextlib.suppress(ValidationError):  # reused event ids
                            actual.ingest([event])
                _assert_same(expected, actual, how)
                if self._has_reopen():
                    other = self._second_handle(store, rules)
                    try:
                        _assert_same(
                            expected,
                            IdentityGraph(rules, store=other),
                            f"{how}, read through a second handle",
                        )
                    finally:
                        other.close()
            finally:
                store.close()

    def test_graph_quickstart(self, tmp_path: Path) -> None:
        self._check_graph(
            tmp_path,
            [
                Track(event="Docs viewed", anonymous_id="anon-7f3a", timestamp=1_714_986_000),
                Identify(
                    user_id="usr_1001",
                    anonymous_id="anon-7f3a",
                    traits={"plan": "free"},
                    timestamp=1_714_986_300,
                ),
                Track(
                    event="API key created",
                    user_id="usr_1001",
                    identifiers={"api_key": "key_9c2e"},
                    timestamp=1_714_986_900,
                ),
                Track(
                    event="API call", identifiers={"api_key": "key_9c2e"}, timestamp=1_714_990_000
                ),
            ],
        )

    def test_graph_late_event_replays_its_component(self, tmp_path: Path) -> None:
        self._check_graph(
            tmp_path,
            [
                Identify(user_id="u1", anonymous_id="a1", timestamp=10, event_id="e10"),
                Alias(
                    user_id="u2", previous_id=("anonymous_id", "a1"), timestamp=20, event_id="e20"
                ),
                Track(
                    event="x",
                    anonymous_id="a1",
                    identifiers={"email": "m@x.io"},
                    timestamp=30,
                    event_id="e30",
                ),
                # late: u2 had a1 first, so u1 is the one refused
                Identify(user_id="u2", anonymous_id="a1", timestamp=5, event_id="e05"),
                Identify(
                    user_id="u1",
                    anonymous_id="a5",
                    set_once={"ref": "late"},
                    timestamp=1,
                    event_id="e01",
                ),
                # u8 is tied to a7 by a refused link only; the late reset of a7 must re-decide
                # that link too (reason: limit -> reset), though u8 is not in a7's profile
                Identify(user_id="u7", anonymous_id="a7", timestamp=10, event_id="f10"),
                Alias(
                    user_id="u8", previous_id=("anonymous_id", "a7"), timestamp=20, event_id="f20"
                ),
                Reset(anonymous_id="a7", timestamp=5, event_id="f05"),
            ],
        )

    def test_graph_resets_and_shared_devices(self, tmp_path: Path) -> None:
        self._check_graph(
            tmp_path,
            [
                Identify(user_id="u1", anonymous_id="shared", timestamp=1, event_id="e1"),
                Reset(anonymous_id="shared", timestamp=2, event_id="e2"),
                Identify(user_id="u2", anonymous_id="shared", timestamp=3, event_id="e3"),
                Identify(
                    user_id="u2",
                    anonymous_id="laptop",
                    identifiers={"email": "fam@x.io"},
                    timestamp=4,
                    event_id="e4",
                ),
                Identify(
                    user_id="u3", identifiers={"email": "fam@x.io"}, timestamp=5, event_id="e5"
                ),
                # a late reset, before e1: re-decides the shared device's component
                Reset(anonymous_id="shared", timestamp=0.5, event_id="e0"),
            ],
        )

    def test_graph_tight_limits(self, tmp_path: Path) -> None:
        self._check_graph(
            tmp_path,
            [
                Identify(user_id="u1", anonymous_id=f"a{i}", timestamp=i, event_id=f"e{i}")
                for i in range(6)
            ]
            + [
                Identify(
                    user_id="u1",
                    identifiers={"email": f"{i}@x.io"},
                    timestamp=10 + i,
                    event_id=f"m{i}",
                )
                for i in range(3)
            ],
            Rules(limits={"email": 1}, max_profile_size=4),
        )

    def test_graph_traits_and_companies(self, tmp_path: Path) -> None:
        self._check_graph(
            tmp_path,
            [
                Identify(
                    user_id="u1",
                    anonymous_id="a1",
                    traits={"plan": "free", "n": 1},
                    set_once={"first": "hn"},
                    timestamp=1,
                    event_id="e1",
                ),
                Identify(
                    user_id="u1",
                    traits={"plan": "pro", "tags": ["a", "b"]},
                    set_once={"first": "google"},
                    timestamp=3,
                    event_id="e3",
                ),
                Identify(
                    user_id="u1",
                    traits={"plan": "old"},
                    set_once={"first": "earliest"},
                    timestamp=0,
                    event_id="e0",
                ),
                IdentifyCompany(
                    company_id="c1",
                    user_id="u1",
                    traits={"name": "Acme"},
                    timestamp=2,
                    event_id="c2",
                ),
                IdentifyCompany(
                    company_id="c1",
                    anonymous_id="a2",
                    traits={"name": "Acme Inc", "seats": 5},
                    timestamp=4,
                    event_id="c4",
                ),
                IdentifyCompany(company_id="c2", user_id="u1", timestamp=5, event_id="c5"),
                IdentifyCompany(
                    company_id="c1",
                    user_id="u1",
                    traits={"name": "Old"},
                    timestamp=1,
                    event_id="c1",
                ),
                Identify(user_id="u9", anonymous_id="a2", timestamp=6, event_id="e6"),
            ],
        )

    def test_graph_duplicates_conflicts_and_blocked_values(self, tmp_path: Path) -> None:
        once = Identify(user_id="u1", anonymous_id="a1", timestamp=1, event_id="e1")
        self._check_graph(
            tmp_path,
            [
                once,
                once,
                Track(
                    event="other content, same id", anonymous_id="a7", timestamp=1, event_id="e1"
                ),
                Identify(user_id="null", anonymous_id="a2", timestamp=2, event_id="e2"),
                Identify(user_id="u2", anonymous_id="undefined", timestamp=3, event_id="e3"),
                Track(
                    event="x", user_id="u2", identifiers={"email": ""}, timestamp=4, event_id="e4"
                ),
                Track(event="x", anonymous_id="a3", timestamp=5),  # derived event id
                Track(event="x", anonymous_id="a3", timestamp=5),  # ... and its duplicate
            ],
        )

    def test_graph_operator_merge_split_forget(self, tmp_path: Path) -> None:
        self._check_graph(
            tmp_path,
            [
                Identify(user_id="u1", anonymous_id="a1", timestamp=1, event_id="e1"),
                Identify(
                    user_id="u2",
                    anonymous_id="a2",
                    traits={"plan": "pro"},
                    timestamp=2,
                    event_id="e2",
                ),
                Merge(
                    a=("user_id", "u1"), b=Identifier("user_id", "u2"), timestamp=3, event_id="m3"
                ),
                Track(
                    event="x",
                    anonymous_id="a1",
                    identifiers={"email": "m@x.io"},
                    timestamp=4,
                    event_id="e4",
                ),
                Split(identifier=("anonymous_id", "a1"), timestamp=5, event_id="s5"),
                Identify(user_id="u1", anonymous_id="a1", timestamp=6, event_id="e6"),
                IdentifyCompany(
                    company_id="c1", anonymous_id="a2", traits={"n": 1}, timestamp=7, event_id="c7"
                ),
                Forget(identifier=("anonymous_id", "a2"), timestamp=8, event_id="f8"),
                Track(event="x", anonymous_id="a2", timestamp=9, event_id="e9"),
                # late: a reset before everything, and the erased id in an early event
                Reset(anonymous_id="a1", timestamp=0.5, event_id="r0"),
                Identify(user_id="u3", anonymous_id="a2", timestamp=0, event_id="e0"),
            ],
        )

    def test_graph_hostile_values(self, tmp_path: Path) -> None:
        events: list[Any] = []
        for i, v in enumerate(_hostile_values(self.text_holds_nul)):
            events.append(
                Identify(
                    user_id=v,
                    anonymous_id=f"{v}-anon",
                    identifiers={"email": v},
                    traits={v: v, "nested": {v: [v, i, None]}},
                    set_once={"k": v},
                    timestamp=i,
                    event_id=v,
                )
            )
            events.append(
                IdentifyCompany(
                    company_id=v,
                    user_id=v,
                    traits={v: i},
                    timestamp=100 + i,
                    event_id=f"company {v}",
                )
            )
        self._check_graph(tmp_path, events, Rules(limits={"user_id": None}))

    # -- the graph's fingerprints, read by batches -----------------------------------------------

    def test_fingerprints_written_by_the_graph_are_seen_by_batches(self, tmp_path: Path) -> None:
        """What the graph stores for an event is the fingerprint ``seen`` gives back (bytes,
        the same in every process): a second graph writing the same store through batches
        recognizes the event as a duplicate, and its reuse with other content as a
        conflict."""
        with self._store(tmp_path) as store:
            event = Identify(user_id="u1", anonymous_id="a1", timestamp=1, event_id="e1")
            IdentityGraph(store=store).ingest([event])
            with store.batch() as batch:
                got = dict(batch.seen(["e1"]))
            _require(
                set(got) == {"e1"} and isinstance(got["e1"], bytes),
                f"seen(['e1']) after the graph wrote e1: {got!r}, expected bytes",
            )
            other = IdentityGraph(store=_ProxyStore(store))
            report = other.ingest([event], on_error="skip")
            _check(
                "a second graph's (duplicates, errors) for the same event",
                (report.duplicates, [str(e.error) for e in report.errors]),
                (1, []),
            )
            clash = Track(event="other content", anonymous_id="a9", timestamp=1, event_id="e1")
            report = other.ingest([clash], on_error="skip")
            _check(
                "a second graph's error fields for e1 with other content",
                [e.field for e in report.errors],
                ["event_id"],
            )
