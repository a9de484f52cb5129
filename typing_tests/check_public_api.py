"""Checked by ``mypy --strict`` (not run): the public API as a user's type checker sees it."""

from __future__ import annotations

from collections.abc import Iterator

from typing_extensions import assert_type

import identityres as ir
from identityres.storage import MemoryStore, Store

g = ir.IdentityGraph(ir.Rules(kinds=("email",), limits={"email": 2}), clock=lambda: 0.0)
assert_type(g.track("Seen", anonymous_id="a", timestamp=1), ir.Outcome)
assert_type(g.identify("u", "a", traits={"plan": "pro"}), ir.Outcome)
assert_type(g.alias("u", ir.Identifier("anonymous_id", "a")), ir.Outcome)
assert_type(g.reset("a"), ir.Outcome)
assert_type(g.identify_company("acme", user_id="u"), ir.Outcome)
assert_type(g.merge("u", ("email", "e@x.io")), ir.Outcome)
assert_type(g.split("u"), ir.Outcome)
assert_type(g.forget(("email", "e@x.io")), ir.Outcome)
assert_type(g.ingest([ir.Track(event="x", anonymous_id="a")]), ir.IngestReport)
assert_type(g.resolve(user_id="u"), str | None)
assert_type(g.profile(anonymous_id="a"), ir.Profile | None)
assert_type(g.profiles(), Iterator[ir.Profile])
assert_type(g.refusals(), Iterator[ir.Refusal])
assert_type(g.company("acme"), ir.Company | None)
assert_type(g.stats(), ir.GraphStats)

out = g.identify("u2", "a")
assert_type(out.refused, tuple[ir.Refusal, ...])
assert_type(out.joined, tuple[ir.Identifier, ...])
for refusal in out.refused:
    assert_type(refusal.reason, ir.Reason)
    assert_type(refusal.kind, str | None)

profile = g.profile(user_id="u")
if profile is not None:
    assert_type(profile.user_id, str)
    assert_type(profile.identified_user_id, str | None)
    assert_type(profile.anonymous_ids, frozenset[str])

store: Store = MemoryStore()
ir.IdentityGraph(store=store)
ir.IdentityGraph(store="memory://")

try:
    g.identify(1.5)  # type: ignore[arg-type]
except ir.IdentifierTypeError as exc:
    assert_type(exc.field, str)
