"""The row suite: the promises of the storage protocol one by one, checked on rows written
by hand whose right answers are known, with no engine in between.

:class:`RowSuite` checks that a store and its batches implement the protocol; that a batch
commits on a normal exit and discards everything (the first batch's rows kept) when an
exception leaves it; that ``save`` maps a batch's negative refs to stored ones consistently,
replaces rows with the same ref or event id and rewrites the links of the components it
loaded; that ``load`` and ``read_components`` return whole components (merged ones
included); that deleted nodes go with their traits and company links; the erasure key and
suppressed hashes; that ``seen`` returns the stored fingerprints of stored ids only; that
traits keep the newest regular and the oldest set-once value, company rows the newest link
and traits, and a named company exists without members; that blocked counts add up; that
every read agrees with what was saved; that hostile identifiers, ids, keys, values and
fingerprints round trip; and that ``close`` is idempotent.
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Any

import attrs

from identityres._rules import Rules
from identityres.errors import StorageError, UnstorableValueError
from identityres.storage._protocol import (
    Batch,
    BlockedCount,
    Changes,
    CompanyLinkRow,
    CompanyRows,
    CompanyTraitRow,
    ComponentRows,
    CountDeltas,
    EventRow,
    LinkRow,
    Store,
    TraitRow,
)
from identityres.testing.conformance._fixtures import (
    SuiteBase,
    _Boom,
    _check,
    _check_rows,
    _first_changes,
    _hostile_values,
    _mapped,
    _node,
    _require,
    _second_changes,
    _some,
)

__all__ = ["RowSuite"]


class RowSuite(SuiteBase):
    """The protocol-level cases: rows saved and read back through one handle."""

    # -- the protocol ---------------------------------------------------------------------------

    def test_store_and_batch_implement_the_protocol(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            _require(isinstance(store, Store), "isinstance(store, Store)")
            with store.batch() as batch:
                _require(isinstance(batch, Batch), f"{batch!r} does not implement Batch")

    def test_empty_store_reads_nothing(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            _check("node() of an empty store", store.node("user_id", "u1"), None)
            _check("nodes_by_ref() of an empty store", dict(store.nodes_by_ref([0, 1])), {})
            _check("iter_profiles() of an empty store", list(store.iter_profiles()), [])
            _check("iter_refused_links() of an empty store", list(store.iter_refused_links()), [])
            _check("company_ids() of an empty store", store.company_ids(), [])
            _check("company_rows() of an empty store", store.company_rows("c1"), None)
            counts = attrs.asdict(store.counts())
            counts["blocked"] = dict(counts["blocked"])
            _check(
                "counts() of an empty store",
                counts,
                {
                    "events": 0,
                    "identifiers": 0,
                    "profiles": 0,
                    "identified_profiles": 0,
                    "blocked": {},
                },
            )
            with store.batch() as batch:
                _check("seen() in an empty store", dict(batch.seen(["e1"])), {})
                _check(
                    "load() in an empty store",
                    batch.load([("user_id", "u1")]),
                    ComponentRows((), ()),
                )

    def test_batch_commits_on_normal_exit(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            self._save(store, _first_changes())
            _require(store.node("user_id", "u1") is not None, "saved node missing after commit")
            _check("counts().events after one batch", store.counts().events, 6)

    def test_exception_in_batch_discards_everything(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            boom = _Boom("raised by the conformance kit inside a batch, after save")
            try:
                with store.batch() as batch:
                    batch.seen(["e1"])
                    batch.load([("user_id", "u1")])
                    batch.save(_first_changes())
                    raise boom
            except _Boom as exc:
                _require(exc is boom, "the batch replaced the exception raised inside it")
            else:
                raise AssertionError("the batch swallowed the exception raised inside it")
            _check("node() after a failed batch", store.node("user_id", "u1"), None)
            _check("iter_profiles() after a failed batch", list(store.iter_profiles()), [])
            _check("company_ids() after a failed batch", store.company_ids(), [])
            _check("counts().events after a failed batch", store.counts().events, 0)
            _check("counts().blocked after a failed batch", dict(store.counts().blocked), {})
            with store.batch() as batch:
                _check("seen() after a failed batch", dict(batch.seen(["e1", "e4"])), {})
            # The store is still usable, and the next batch starts from nothing.
            self._save(store, _first_changes())
            _check("identifiers after a failed then a good batch", store.counts().identifiers, 6)

    def test_exception_in_second_batch_keeps_the_first(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            refs = self._saved_world(store)
            before = sorted(map(repr, store.iter_profiles()))
            with contextlib.suppress(_Boom), store.batch() as batch:
                batch.load([("user_id", "u2"), ("email", "x@example.com")])
                batch.save(_second_changes(refs))
                raise _Boom
            _check(
                "profiles after a failed second batch",
                sorted(map(repr, store.iter_profiles())),
                before,
            )
            _check("node() after a failed second batch", store.node("phone", "+1 555 0100"), None)

    def test_batch_without_save_changes_nothing(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            with store.batch() as batch:
                batch.seen(["e1"])
                batch.load([("user_id", "u1")])
            _check(
                "counts().identifiers after a batch with no save",
                store.counts().identifiers,
                0,
            )

    def test_save_maps_new_refs_consistently(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            changes = _first_changes()
            refs = self._saved_world(store)
            ref = {row.ref: refs[row.value] for row in changes.nodes}  # -n -> stored ref
            stored = list(ref.values())
            _require(all(r >= 0 for r in stored), f"stored refs must be >= 0: {ref!r}")
            _require(len(set(stored)) == len(stored), f"two nodes got one ref: {ref!r}")
            by_ref = store.nodes_by_ref(stored)
            _check_rows("node rows", by_ref.values(), [_mapped(n, ref) for n in changes.nodes])
            for r, row in by_ref.items():
                _check(f"nodes_by_ref()[{r}].ref", row.ref, r)
            with store.batch() as batch:
                rows = batch.load([("user_id", "u1"), ("anonymous_id", "a2")])
            _check_rows(
                "link rows",
                rows.links,
                [_mapped(link, ref) for link in changes.links if link.event_id != "e4"],
            )
            traits = [t for p in store.iter_profiles() for t in p.traits]
            _require(
                {t.node for t in traits} == {ref[-1], ref[-5]},
                f"trait rows on refs {sorted({t.node for t in traits})}, expected on "
                f"{sorted({ref[-1], ref[-5]})} (the refs given to -1 and -5)",
            )
            found = store.company_rows("c2")
            _require(
                found is not None and sorted(found.members) == [ref[-6]],
                f"company c2's members: {found!r}, expected [{ref[-6]}] (the ref given to -6)",
            )
            # A second batch's negative refs are its own: -1 is a new node again.
            refs2 = self._saved_world_second(store, refs)
            phone = refs2["+1 555 0100"]
            _require(phone >= 0 and phone not in stored, f"new node got ref {phone}, in {stored}")
            (profile,) = [p for p in store.iter_profiles() if any(n.ref == phone for n in p.nodes)]
            _require(
                any(t.node == phone and t.key == "verified" for t in profile.traits),
                f"the second batch's trait on ref -1 is not on {phone}: {profile.traits!r}",
            )
            found = store.company_rows("c1")
            _require(
                found is not None and sorted(found.members) == sorted([ref[-1], phone]),
                f"company c1's members: {found!r}, expected {sorted([ref[-1], phone])}",
            )

    def test_load_returns_whole_components(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            changes = _first_changes()
            refs = self._saved_world(store)
            ref = {row.ref: refs[row.value] for row in changes.nodes}
            nodes = {n.value: _mapped(n, ref) for n in changes.nodes}
            links = {link.event_id: _mapped(link, ref) for link in changes.links}
            x = ([nodes[v] for v in ("u1", "a1", "u2")], [links["e1"], links["e3"]])
            y = ([nodes["a9"]], [links["e4"]])
            z = ([nodes[v] for v in ("x@example.com", "a2")], [links["e5"]])
            cases: list[tuple[list[tuple[str, str]], list[tuple[list[Any], list[Any]]]]] = [
                # u2 is in X by a refused link only: the component, not the profile
                ([("user_id", "u2")], [x]),
                ([("anonymous_id", "a1")], [x]),
                ([("anonymous_id", "a9")], [y]),
                ([("anonymous_id", "a2"), ("user_id", "u1"), ("anonymous_id", "a1")], [x, z]),
                ([("user_id", "nobody"), ("anonymous_id", "a9")], [y]),
                ([("user_id", "nobody"), ("no_such_kind", "u1"), ("email", "u1")], []),
                ([], []),
            ]
            for identifiers, components in cases:
                with store.batch() as batch:
                    rows = batch.load(identifiers)
                want_nodes = [n for c in components for n in c[0]]
                want_links = [link for c in components for link in c[1]]
                _check_rows(f"load({identifiers!r}).nodes", rows.nodes, want_nodes)
                _check_rows(f"load({identifiers!r}).links", rows.links, want_links)

    def test_load_after_a_merge_returns_the_merged_component(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            refs = self._saved_world(store, both=True)
            with store.batch() as batch:
                rows = batch.load([("anonymous_id", "a2")])
            _check(
                "identifiers loaded with a2 after e6 merged its component into u1's",
                sorted(n.value for n in rows.nodes),
                sorted(["u1", "a1", "u2", "x@example.com", "a2", "+1 555 0100"]),
            )
            _check(
                "event ids of the links loaded with a2",
                sorted(link.event_id for link in rows.links),
                ["e0", "e1", "e3", "e5", "e6", "e7"],
            )
            root = refs["u1"]
            for n in rows.nodes:
                _check(f"component of {n.value} after the merge", n.component, root)
            for link in rows.links:
                _check(f"component of link {link.event_id} after the merge", link.component, root)

    def test_saved_rows_replace_rows_with_the_same_ref_or_event_id(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            refs = self._saved_world(store, both=True)
            u1, a1, u2 = refs["u1"], refs["a1"], refs["u2"]
            a1_row = store.node("anonymous_id", "a1")
            _check(
                "a1's row after the second batch",
                a1_row,
                _node(a1, "anonymous_id", "a1", (5.0, "e0"), 20.0, u1, u2),
            )
            refused = {link.event_id: link for link in store.iter_refused_links()}
            _check("event ids of the refused links", sorted(refused), ["e1", "e3"])
            _check(
                "refusals of e1 (now refused: replayed)",
                refused["e1"].refused,
                ((1, "limit_exceeded", "user_id"),),
            )
            _check("members of e1", refused["e1"].members, (u1, a1))
            profiles = {tuple(sorted(n.value for n in p.nodes)) for p in store.iter_profiles()}
            _check(
                "profiles after the second batch",
                profiles,
                {
                    ("u1",),
                    ("a9",),
                    tuple(sorted(["+1 555 0100", "a1", "a2", "u2", "x@example.com"])),
                },
            )
            # A replay that lifts a refusal saves the link again without it: gone from reads.
            with store.batch() as batch:
                rows = batch.load([("user_id", "u1")])
                batch.save(
                    Changes(
                        nodes=rows.nodes,
                        links=tuple(
                            attrs.evolve(link, refused=()) if link.event_id == "e3" else link
                            for link in rows.links
                        ),
                    )
                )
            _check(
                "refused links once e3's refusal is lifted",
                sorted(link.event_id for link in store.iter_refused_links()),
                ["e1"],
            )

    def test_save_replaces_the_links_of_loaded_components(self, tmp_path: Path) -> None:
        """``Changes.deleted_links`` go (the engine drops an erased identifier's own reset or
        split from a log so); the link rows a save does not name stay as they were."""
        with self._store(tmp_path) as store:
            self._saved_world(store)
            with store.batch() as batch:
                batch.load([("user_id", "u1")])
                batch.save(Changes(deleted_links=("e3",)))
            with store.batch() as batch:
                rows = batch.load([("user_id", "u1"), ("email", "x@example.com")])
            _check(
                "event ids of the links after a save without e3",
                sorted(link.event_id for link in rows.links),
                ["e1", "e5"],
            )
            _check("iter_refused_links() after e3 went", list(store.iter_refused_links()), [])

    def test_deleted_nodes_go_with_their_traits_and_company_links(self, tmp_path: Path) -> None:
        """``Changes.deleted`` (an erasure, ``forget``): the node rows, their traits and
        company links go; the company stays, with its traits and no members."""
        with self._store(tmp_path) as store:
            refs = self._saved_world(store)
            email, a2 = refs["x@example.com"], refs["a2"]
            node = _node(email, "email", "x@example.com", (50.0, "e5"), 50.0, email, email)
            links = (
                LinkRow("e5", 50.0, email, (email,), etype="identify"),
                LinkRow("f1", 60.0, email, (), etype="forget", erased_kind="anonymous_id"),
            )
            with store.batch() as batch:
                batch.load([("anonymous_id", "a2")])
                batch.save(
                    Changes(
                        nodes=(node,),
                        links=links,
                        events=(EventRow("f1", b"fp-f1"),),
                        deleted=(a2,),
                        suppressed=(b"\x00keyed hash of a2\xff",),
                        counts=CountDeltas(events=1, identifiers=-1),
                    )
                )
            _check("node() of the erased identifier", store.node("anonymous_id", "a2"), None)
            _check(
                "nodes_by_ref() of the erased ref",
                dict(store.nodes_by_ref([a2, email])),
                {email: node},
            )
            rows = store.profile_rows(email)
            _check_rows("the e-mail's profile's nodes after the erasure", rows.nodes, [node])
            _check_rows(
                "the e-mail's profile's traits after the erasure",
                rows.traits,
                [TraitRow(email, "name", 50.0, "e5", "Ada", False)],
            )
            _check_rows("the e-mail's profile's company links", rows.company_links, [])
            _require(
                all(n.ref != a2 for p in store.iter_profiles() for n in p.nodes),
                "iter_profiles() still shows the erased node",
            )
            _check(
                "company_ids() after erasing c2's only member", store.company_ids(), ["c1", "c2"]
            )
            found = _some(store.company_rows("c2"), "company_rows('c2') is None after erasure")
            _check_rows(
                "c2's trait rows after the erasure",
                found.traits,
                [CompanyTraitRow("c2", "employees", 50.0, "e5", 12)],
            )
            _check("c2's member refs after the erasure", list(found.members), [])
            counts = attrs.asdict(store.counts())
            counts["blocked"] = dict(counts["blocked"])
            _check(
                "counts() after the erasure",
                counts,
                {
                    "events": 7,
                    "identifiers": 5,
                    "profiles": 4,
                    "identified_profiles": 2,
                    "blocked": {("user_id", "null"): 2},
                },
            )
            with store.batch() as batch:
                loaded = batch.load([("email", "x@example.com")])
            _check_rows("the e-mail's component after the erasure", loaded.nodes, [node])
            _check_rows("the e-mail's component's links after the erasure", loaded.links, links)

    def test_erasure_key_and_suppressed_hashes(self, tmp_path: Path) -> None:
        """``erasure_key()``: a secret kept with the data, the same from every handle;
        ``Batch.suppressed(hashes)``: those of ``hashes`` saved in ``Changes.suppressed``."""
        with self._store(tmp_path) as store:
            key = store.erasure_key()
            _require(
                isinstance(key, bytes) and len(key) >= 16,
                f"erasure_key() must be bytes, 16 or more: {key!r}",
            )
            _check("erasure_key() called again", store.erasure_key(), key)
            h1, h2 = b"\x00h1" + bytes(29), b"h2'\xff" * 8
            self._save(store, Changes(suppressed=(h1,)))
            with store.batch() as batch:
                _check(
                    "suppressed([h1, h2]) after saving h1", set(batch.suppressed([h1, h2])), {h1}
                )
                _check("suppressed([])", set(batch.suppressed([])), set())
            self._save(store, Changes(suppressed=(h1, h2)))
            with store.batch() as batch:
                _check(
                    "suppressed([h1, h2]) after saving both",
                    set(batch.suppressed([h1, h2])),
                    {h1, h2},
                )
            _check("erasure_key() after writes", store.erasure_key(), key)
            if self._has_reopen():
                other = self._second_handle(store)
                try:
                    _check("erasure_key() through a second handle", other.erasure_key(), key)
                finally:
                    other.close()

    def test_read_components_is_load_without_a_batch(self, tmp_path: Path) -> None:
        """``read_components``: what ``load`` returns, outside a batch, committed only."""
        with self._store(tmp_path) as store:
            refs = self._saved_world(store)
            asked = [("anonymous_id", "a2"), ("user_id", "u2"), ("user_id", "nobody")]
            with store.batch() as batch:
                loaded = batch.load(asked)
            read = store.read_components(asked)
            _check_rows("read_components().nodes", read.nodes, loaded.nodes)
            _check_rows("read_components().links", read.links, loaded.links)
            _check("read_components([])", store.read_components([]), ComponentRows((), ()))
            with store.batch() as batch:
                batch.load([("user_id", "u2"), ("email", "x@example.com")])
                batch.save(_second_changes(refs))
                _check_rows(
                    "read_components() while a batch is not yet committed",
                    store.read_components(asked).nodes,
                    loaded.nodes,
                )
            _require(
                any(n.value == "+1 555 0100" for n in store.read_components(asked).nodes),
                "read_components() after commit misses the new phone number",
            )

    def test_seen_returns_stored_fingerprints_of_stored_ids_only(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            self._saved_world(store)
            with store.batch() as batch:
                _check(
                    "seen(['e1', 'e4', 'e9'])",
                    dict(batch.seen(["e1", "e4", "e9"])),
                    {"e1": b"\x01fp-e1", "e4": b"\x00fp-e4\xff"},
                )
                _check("seen([])", dict(batch.seen([])), {})
                _check("seen(['E1', 'e1 '])", dict(batch.seen(["E1", "e1 "])), {})
                got = batch.seen(["e1"])
                _require(
                    all(isinstance(v, bytes) for v in got.values()),
                    f"fingerprints must come back as bytes: {got!r}",
                )

    def test_traits_keep_newest_regular_and_oldest_set_once(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            refs = self._saved_world(store)
            u1 = refs["u1"]
            (p,) = [p for p in store.iter_profiles() if any(n.ref == u1 for n in p.nodes)]
            _check_rows(
                "u1's profile's trait rows after one batch",
                p.traits,
                [
                    TraitRow(u1, "plan", 20.0, "e2", "pro", False),
                    TraitRow(u1, "first_referrer", 10.0, "e1", "google", True),
                ],
            )
            refs = self._saved_world_second(store, refs)
            u1, u2, phone, email = (
                refs["u1"],
                refs["u2"],
                refs["+1 555 0100"],
                refs["x@example.com"],
            )
            _check_rows(
                "u1's profile's trait rows after two batches",
                store.profile_rows(u1).traits,
                [
                    TraitRow(u1, "plan", 20.0, "e2z", "enterprise", False),
                    TraitRow(u1, "first_referrer", 10.0, "e0c", "docs", True),
                ],
            )
            _check_rows(
                "u2's profile's trait rows after two batches",
                store.profile_rows(u2).traits,
                [
                    TraitRow(u2, "plan", 5.0, "e0", "team", False),
                    TraitRow(email, "name", 50.0, "e5", "Ada", False),
                    TraitRow(phone, "verified", 70.0, "e7", True, False),
                ],
            )

    def test_company_rows_keep_newest_link_and_traits(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            refs = self._saved_world(store)
            u1, a2 = refs["u1"], refs["a2"]
            _check_rows(
                "u1's company links",
                store.profile_rows(u1).company_links,
                [CompanyLinkRow(u1, "c1", 25.0, "e2b")],
            )
            _check("company_ids()", store.company_ids(), ["c1", "c2"])
            found = _some(store.company_rows("c1"), "company_rows('c1') is None")
            _check_rows(
                "c1's trait rows",
                found.traits,
                [CompanyTraitRow("c1", "name", 25.0, "e2b", "Acme Inc")],
            )
            _check("c1's member refs", sorted(found.members), [u1])
            found = _some(store.company_rows("c2"), "company_rows('c2') is None")
            _check_rows(
                "c2's trait rows",
                found.traits,
                [CompanyTraitRow("c2", "employees", 50.0, "e5", 12)],
            )
            _check("c2's member refs", sorted(found.members), [a2])
            _check("company_rows('c3')", store.company_rows("c3"), None)
            refs = self._saved_world_second(store, refs)
            phone = refs["+1 555 0100"]
            _check_rows(
                "u1's company links after two batches",
                store.profile_rows(refs["u1"]).company_links,
                [CompanyLinkRow(u1, "c1", 25.0, "e2b")],
            )
            _check_rows(
                "u2's profile's company links after two batches",
                store.profile_rows(refs["u2"]).company_links,
                [CompanyLinkRow(a2, "c2", 50.0, "e5"), CompanyLinkRow(phone, "c1", 70.0, "e7")],
            )
            found = _some(store.company_rows("c1"), "company_rows('c1') is None")
            _check_rows(
                "c1's trait rows after two batches",
                found.traits,
                [CompanyTraitRow("c1", "name", 30.0, "e6", "Acme Corp")],
            )
            _check("c1's member refs after two batches", sorted(found.members), sorted([u1, phone]))
            found = _some(store.company_rows("c2"), "company_rows('c2') is None")
            _check_rows(
                "c2's trait rows after two batches",
                found.traits,
                [CompanyTraitRow("c2", "employees", 50.0, "e5", 12)],
            )

    def test_a_named_company_exists_without_members(self, tmp_path: Path) -> None:
        """A company exists once a batch names it (``Changes.companies``), with or without
        traits, even when no node links to it (its only member was erased)."""
        with self._store(tmp_path) as store:
            self._save(
                store,
                Changes(
                    companies=("c8", "c9"),
                    company_traits=(CompanyTraitRow("c9", "plan", 1.0, "e9", "team"),),
                    events=(EventRow("e9", b"fp-e9"),),
                ),
            )
            _check("company_ids() of named companies", store.company_ids(), ["c8", "c9"])
            _check("company_rows('c8')", store.company_rows("c8"), CompanyRows((), ()))
            found = _some(store.company_rows("c9"), "company_rows('c9') is None")
            _check_rows(
                "c9's trait rows", found.traits, [CompanyTraitRow("c9", "plan", 1.0, "e9", "team")]
            )
            _check("c9's member refs", list(found.members), [])

    def test_blocked_counts_add_up(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            self._saved_world(store, both=True)
            _check(
                "counts().blocked after two batches",
                dict(store.counts().blocked),
                {("user_id", "null"): 3, ("email", ""): 3},
            )

    def test_reads_agree_with_what_was_saved(self, tmp_path: Path) -> None:
        with self._store(tmp_path) as store:
            changes = _first_changes()
            refs = self._saved_world(store)
            ref = {row.ref: refs[row.value] for row in changes.nodes}
            for row in changes.nodes:
                _check(
                    f"node({row.kind!r}, {row.value!r})",
                    store.node(row.kind, row.value),
                    _mapped(row, ref),
                )
            _check("node() of an unknown value", store.node("user_id", "a1"), None)
            _check("node() of an unknown kind", store.node("no_such_kind", "u1"), None)
            asked = [*ref.values(), 10**12, -1]
            _check(
                "nodes_by_ref() keys (unknown refs left out)",
                sorted(store.nodes_by_ref(asked)),
                sorted(ref.values()),
            )
            profiles = list(store.iter_profiles())
            _check("number of profiles from iter_profiles()", len(profiles), 4)
            for p in profiles:
                roots = {n.profile for n in p.nodes}
                _require(len(roots) == 1, f"iter_profiles() mixed profiles {roots}: {p!r}")
                (root,) = roots
                _check_rows(f"profile_rows({root}).nodes", store.profile_rows(root).nodes, p.nodes)
                _check_rows(
                    f"profile_rows({root}).traits", store.profile_rows(root).traits, p.traits
                )
                _check_rows(
                    f"profile_rows({root}).company_links",
                    store.profile_rows(root).company_links,
                    p.company_links,
                )
            _check_rows(
                "nodes of all profiles",
                [n for p in profiles for n in p.nodes],
                [_mapped(n, ref) for n in changes.nodes],
            )
            _check_rows(
                "iter_refused_links()",
                store.iter_refused_links(),
                [_mapped(link, ref) for link in changes.links if link.refused],
            )
            counts = attrs.asdict(store.counts())
            counts["blocked"] = dict(counts["blocked"])
            _check(
                "counts()",
                counts,
                {
                    "events": 6,
                    "identifiers": 6,
                    "profiles": 4,
                    "identified_profiles": 2,
                    "blocked": {("user_id", "null"): 2},
                },
            )

    def test_hostile_values_round_trip(self, tmp_path: Path) -> None:
        hostile = _hostile_values(self.text_holds_nul)
        with self._store(tmp_path) as store:
            n = len(hostile)
            kinds = ["user_id", "anonymous_id", "email", "phone", "api_key"]
            nodes = tuple(
                _node(-(i + 1), kinds[i % 5], v, (float(i), v), float(i), -(i + 1), -(i + 1))
                for i, v in enumerate(hostile)
            )
            trait_values: list[Any] = [
                None,
                True,
                False,
                0,
                -1,
                2**63,
                2**70,
                1.5,
                0.1 + 0.2,
                1e300,
                "",
                [1, "x", None, [True]],
                {"nested": {"list": [1.25, False], "'": "\x00"}},
                "😀" * 100,
            ]
            traits = tuple(
                TraitRow(-(i % n + 1), k, 1.0, "t", value, i % 2 == 0)
                for i, (k, value) in enumerate(zip(hostile, itertools.cycle(trait_values)))
            ) + tuple(
                TraitRow(-1, f"value {i}", 1.0, "t", value, False)
                for i, value in enumerate(trait_values)
            )
            changes = Changes(
                nodes=nodes,
                traits=traits,
                company_links=tuple(CompanyLinkRow(-1, v, 2.0, v) for v in hostile),
                company_traits=tuple(CompanyTraitRow(v, v, 2.0, v, v + "!") for v in hostile),
                events=tuple(EventRow(v, v.encode("utf-8") + b"\x00\xff") for v in hostile),
                blocked=tuple(BlockedCount("user_id", v, 1) for v in hostile),
                counts=CountDeltas(
                    events=len(hostile), identifiers=len(nodes), profiles=len(nodes)
                ),
            )
            self._save(store, changes)
            ref = {}
            for row in nodes:
                got = _some(
                    store.node(row.kind, row.value), f"node({row.kind!r}, {row.value!r}) is None"
                )
                ref[row.ref] = got.ref
            for row in nodes:
                _check(
                    f"node({row.kind!r}, {row.value!r})",
                    store.node(row.kind, row.value),
                    _mapped(row, ref),
                )
            _check_rows(
                "trait rows of hostile keys and values",
                [t for p in store.iter_profiles() for t in p.traits],
                [_mapped(t, ref) for t in traits],
            )
            _check("company_ids() of hostile ids", store.company_ids(), sorted(hostile))
            for v in hostile:
                found = _some(store.company_rows(v), f"company_rows({v!r}) is None")
                _check_rows(
                    f"company_rows({v!r}) traits",
                    found.traits,
                    [CompanyTraitRow(v, v, 2.0, v, v + "!")],
                )
                _check(f"company_rows({v!r}) members", list(found.members), [ref[-1]])
            with store.batch() as batch:
                _check(
                    "seen() of hostile event ids",
                    dict(batch.seen(hostile)),
                    {v: v.encode("utf-8") + b"\x00\xff" for v in hostile},
                )
                _check("seen() of a prefix of a hostile id", dict(batch.seen(["a", "O"])), {})
            _check(
                "counts().blocked of hostile values",
                dict(store.counts().blocked),
                {("user_id", v): 1 for v in hostile},
            )
            _check("node() of a LIKE pattern", store.node("user_id", "%"), None)

    def test_text_with_nul_round_trips_or_is_refused(self, tmp_path: Path) -> None:
        """A store whose text holds NUL keeps it (``test_hostile_values_round_trip``); one
        that cannot (``text_holds_nul = False``) refuses a batch storing NUL in an identifier
        value, event id, trait key or company id with ``UnstorableValueError`` naming the
        field, and nothing of that batch is stored."""
        if self.text_holds_nul:
            return
        cases = [
            ("user_id", Changes(nodes=(_node(-1, "user_id", "u\x00", (1.0, "e1"), 1.0, -1, -1),))),
            ("event_id", Changes(events=(EventRow("e\x00", b"fp"),))),
            (
                "traits",
                Changes(
                    nodes=(_node(-1, "user_id", "u9", (1.0, "e1"), 1.0, -1, -1),),
                    traits=(TraitRow(-1, "k\x00", 1.0, "e1", 1, False),),
                ),
            ),
            ("company_id", Changes(companies=("c\x00",))),
        ]
        with self._store(tmp_path) as store:
            for field, changes in cases:
                before = (store.counts(), sorted(map(repr, store.iter_profiles())))
                try:
                    with store.batch() as batch:
                        batch.save(
                            attrs.evolve(changes, events=changes.events or (EventRow("ok", b"f"),))
                        )
                except UnstorableValueError as exc:
                    _check(f"the field named for NUL in {field}", exc.field, field)
                else:
                    raise AssertionError(f"a NUL in {field} was neither refused nor an error")
                _check(
                    f"the store after a batch refused for NUL in {field}",
                    (store.counts(), sorted(map(repr, store.iter_profiles()))),
                    before,
                )
                _check("company_ids() after a refused batch", store.company_ids(), [])
                with store.batch() as batch:
                    _check("seen() after a refused batch", dict(batch.seen(["ok"])), {})

    def test_bind_rules_records_the_first_rules(self, tmp_path: Path) -> None:
        """The first rules bound are the store's; a later call gets them back, whatever it
        proposes (the graph then refuses other rules); a batch makes them durable."""
        with self._store(tmp_path) as store:
            # (``_store`` bound the default rules already, as a graph does first)
            default = Rules().record()
            other = Rules(limits={"email": 1}).record()
            _check("bind_rules(default) again", store.bind_rules(default).digest, default.digest)
            _check("bind_rules(other rules)", store.bind_rules(other).digest, default.digest)
            self._save(store, _first_changes())
            _check(
                "bind_rules(other rules) after a batch",
                store.bind_rules(other).digest,
                default.digest,
            )
            if self._has_reopen():
                second = self._second_handle(store, attach=False)
                try:
                    _check(
                        "bind_rules(other rules) on a second handle",
                        second.bind_rules(other).digest,
                        default.digest,
                    )
                finally:
                    second.close()

    def test_save_refuses_a_ref_it_never_gave_out(self, tmp_path: Path) -> None:
        """Refs ``>= 0`` come from the store: a changed row naming one it does not hold is a
        ``StorageError``, and the batch leaves nothing behind."""
        with self._store(tmp_path) as store:
            row = _node(987_654, "user_id", "u1", (1.0, "e1"), 1.0, 987_654, 987_654)
            try:
                with store.batch() as batch:
                    batch.save(Changes(nodes=(row,), events=(EventRow("e1", b"fp"),)))
            except StorageError:
                pass
            else:
                raise AssertionError("save() of a ref the store never gave out did not raise")
            _check("node() after the refused save", store.node("user_id", "u1"), None)
            _check("counts().events after the refused save", store.counts().events, 0)

    def test_close_is_idempotent(self, tmp_path: Path) -> None:
        store = self._new_store(tmp_path)
        self._save(store, _first_changes())
        store.close()
        store.close()
        empty = self._new_store(tmp_path)
        empty.close()
        empty.close()
