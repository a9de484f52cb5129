"""Segment/RudderStack messages read as the clients send them (docs/formats.md): traits under
``context.traits``, an identify with only an anonymous id, both alias flows, the timestamp
precedence, and identifiers extracted from inside messages by the rules' extraction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import identityres as ir
from identityres import errors
from identityres.storage.sqlite import SQLiteStore

T0 = "2024-05-06T09:00:00Z"


def msg(mtype: str, mid: str, minute: int = 0, **keys: Any) -> dict[str, Any]:
    return {"type": mtype, "messageId": mid, "timestamp": f"2024-05-06T09:{minute:02d}:00Z", **keys}


def profiles(graph: ir.IdentityGraph) -> set[tuple[Any, ...]]:
    return {
        (
            p.user_id,
            tuple(sorted((i.kind, i.value) for i in p.all_identifiers())),
            tuple(sorted(p.traits.items())),
            p.company_id,
        )
        for p in graph.profiles()
    }


# -- context.traits -------------------------------------------------------------------------


def test_context_traits_are_read_and_the_top_level_wins() -> None:
    g = ir.IdentityGraph()
    g.ingest(
        [
            msg(
                "identify",
                "m1",
                userId="u1",
                context={"traits": {"name": "Ada", "plan": "free"}},
                traits={"plan": "team"},
            ),
            # RudderStack: the traits only under context.traits
            msg("identify", "m2", 1, userId="u2", context={"traits": {"name": "Ben"}}),
        ]
    )
    p1, p2 = g.profile(user_id="u1"), g.profile(user_id="u2")
    assert p1 is not None and p1.traits == {"name": "Ada", "plan": "team"}
    assert p2 is not None and p2.traits == {"name": "Ben"}


def test_context_traits_that_are_not_an_object_are_refused_naming_the_field() -> None:
    g = ir.IdentityGraph()
    with pytest.raises(errors.InvalidEventError) as info:
        g.ingest([msg("identify", "m1", userId="u1", context={"traits": ["x"]})])
    assert (info.value.field, info.value.value) == ("context.traits", ["x"])


# -- identify with only an anonymous id -----------------------------------------------------


def test_identify_with_only_an_anonymous_id_writes_the_visitors_traits() -> None:
    g = ir.IdentityGraph()
    report = g.ingest(
        [
            msg("identify", "m1", anonymousId="a1", traits={"theme": "dark"}),
            msg("identify", "m2", 1, userId="u1", anonymousId="a1", traits={"name": "Ada"}),
        ]
    )
    assert report.errors == ()
    p = g.profile(user_id="u1")
    assert p is not None and p.traits == {"theme": "dark", "name": "Ada"}
    assert p.anonymous_ids == {"a1"}


def test_the_method_takes_an_identify_without_user_id_too() -> None:
    g = ir.IdentityGraph()
    g.identify(None, anonymous_id="a1", traits={"theme": "dark"}, timestamp=1)
    p = g.profile(anonymous_id="a1")
    assert p is not None and p.identified_user_id is None and p.traits == {"theme": "dark"}
    with pytest.raises(errors.InvalidEventError) as info:
        g.identify(None, traits={"theme": "dark"}, timestamp=2)
    assert info.value.field == "user_id"


# -- alias ----------------------------------------------------------------------------------


def test_server_alias_from_the_devices_anonymous_id_joins_the_device() -> None:
    # what segment-analytics-python and rudder-sdk-python send: no anonymousId
    g = ir.IdentityGraph()
    report = g.ingest(
        [
            msg("screen", "m1", anonymousId="dev-2", name="Home"),
            msg("identify", "m2", 1, userId="u1", traits={"name": "Ada"}),
            msg("alias", "m3", 2, previousId="dev-2", userId="u1", anonymousId=None),
        ]
    )
    assert report.errors == ()
    assert [o.refused for o in report.outcomes] == [(), (), ()]
    p = g.profile(user_id="u1")
    assert p is not None and p.anonymous_ids == {"dev-2"}
    # no identified user named after the device
    assert g.profile(user_id="dev-2") is None
    assert g.stats().identified_profiles == 1


def test_alias_from_a_previous_user_id_is_refused_pointing_at_merge() -> None:
    g = ir.IdentityGraph()
    m = msg("alias", "m1", previousId="u_old", userId="u_new", anonymousId="dev-1")
    with pytest.raises(errors.AliasRefusedError) as info:
        g.ingest([m])
    assert (info.value.field, info.value.value) == ("previousId", "u_old")
    assert "IdentityGraph.merge()" in str(info.value) and "limits" in str(info.value)
    assert isinstance(info.value, errors.InvalidEventError)
    assert list(g.profiles()) == []


def test_alias_from_a_previous_user_id_joins_when_the_limit_is_lifted() -> None:
    g = ir.IdentityGraph(ir.Rules(limits={"user_id": None}))
    g.ingest(
        [
            msg("identify", "m0", userId="u_old"),
            msg("alias", "m1", 1, previousId="u_old", userId="u_new", anonymousId="dev-1"),
        ]
    )
    p = g.profile(user_id="u_old")
    assert p is not None and p.identifiers["user_id"] == {"u_old", "u_new"}


ALIAS_STREAM = [
    msg("page", "p1", 0, anonymousId="dev-1", name="Docs"),
    msg("identify", "i1", 1, userId="u1", anonymousId="dev-1", traits={"email": "a@x.io"}),
    msg("identify", "i2", 2, anonymousId="dev-2", traits={"theme": "dark"}),
    msg("alias", "a1", 3, previousId="dev-2", userId="u1"),
    msg("alias", "a2", 4, previousId="dev-3", userId="u2", anonymousId="dev-3"),
    msg("alias", "a3", 5, previousId="u1", userId="u2", anonymousId="dev-3"),  # refused
    msg("identify", "i3", 6, userId="u2", anonymousId="dev-2"),  # dev-2 is u1's: refused
    msg("track", "t1", 7, event="X", userId="u2", properties={"email": "b@x.io"}),
]


@settings(max_examples=40, deadline=None)
@given(st.permutations(ALIAS_STREAM), st.booleans())
def test_alias_flows_give_the_same_profiles_in_any_order(
    stream: list[dict[str, Any]], one_by_one: bool
) -> None:
    expected = ir.IdentityGraph()
    expected.ingest(ALIAS_STREAM, on_error="skip")
    g = ir.IdentityGraph()
    if one_by_one:
        errs = [e for m in stream for e in g.ingest([m], on_error="skip").errors]
    else:
        errs = list(g.ingest(stream, on_error="skip").errors)
    assert [type(e.error) for e in errs] == [errors.AliasRefusedError]
    assert profiles(g) == profiles(expected)
    u1 = g.profile(user_id="u1")
    assert u1 is not None and u1.anonymous_ids == {"dev-1", "dev-2"}
    assert u1.identifiers["email"] == {"a@x.io"}
    u2 = g.profile(user_id="u2")
    assert u2 is not None and u2.anonymous_ids == {"dev-3"}
    assert u2.identifiers["email"] == {"b@x.io"}


# -- timestamps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"timestamp": "2024-05-06T09:00:00Z", "originalTimestamp": "2024-05-06T08:00:00Z"}, 9),
        ({"timestamp": None, "originalTimestamp": "2024-05-06T08:00:00Z"}, 8),
        ({"timestamp": None, "sentAt": "2024-05-06T07:00:00Z"}, 7),
        ({"receivedAt": "2024-05-06T06:00:00Z", "sentAt": None}, 6),
        # no skew correction: originalTimestamp as sent, not receivedAt - (sentAt - original)
        (
            {
                "originalTimestamp": "2024-05-06T05:00:00Z",
                "sentAt": "2024-05-06T05:30:00Z",
                "receivedAt": "2024-05-06T09:30:00Z",
            },
            5,
        ),
    ],
)
def test_timestamp_precedence(keys: dict[str, Any], expected: int) -> None:
    g = ir.IdentityGraph(clock=lambda: 0)
    g.ingest([{"type": "track", "event": "x", "anonymousId": "a", "messageId": "m", **keys}])
    p = g.profile(anonymous_id="a")
    assert p is not None and p.first_seen is not None
    assert p.first_seen.hour == expected and p.first_seen.year == 2024


def test_no_time_at_all_takes_the_clock() -> None:
    g = ir.IdentityGraph(clock=lambda: 86_400)
    g.ingest([{"type": "track", "event": "x", "anonymousId": "a", "timestamp": None}])
    p = g.profile(anonymous_id="a")
    assert p is not None and p.first_seen is not None and p.first_seen.timestamp() == 86_400


def test_a_bad_fallback_time_is_refused_naming_its_key() -> None:
    g = ir.IdentityGraph()
    with pytest.raises(errors.InvalidTimestampError) as info:
        g.ingest([{"type": "track", "event": "x", "anonymousId": "a", "sentAt": "soon"}])
    assert (info.value.field, info.value.value) == ("sentAt", "soon")


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-06T09:00:00.12Z",
        "2024-05-06T09:00:00.120+0000",
        "2024-05-06T11:00:00.12+0200",
        "2024-05-06T09:00:00.1200001Z",
        "2024-05-06T09:00:00,12Z",
    ],
)
def test_iso_forms_read_the_same_on_every_python(text: str) -> None:
    from identityres._events import parse_iso_timestamp

    assert parse_iso_timestamp(text, "timestamp") == pytest.approx(1_714_986_000.12)


# -- extraction -----------------------------------------------------------------------------


def test_default_extraction_finds_emails_where_segment_unify_does() -> None:
    g = ir.IdentityGraph()
    g.ingest(
        [
            msg("identify", "m1", userId="u1", traits={"email": "ada@x.io"}),
            msg(
                "track",
                "m2",
                1,
                anonymousId="a2",
                event="X",
                context={"traits": {"email": "b@x.io"}},
            ),
            msg("page", "m3", 2, anonymousId="a3", name="P", properties={"email": "c@x.io"}),
            msg("identify", "m4", 3, userId="u4", traits={"phone": "+15555550100"}),
        ]
    )
    assert g.resolve(identifier=("email", "ada@x.io")) == "u1"
    assert g.resolve(identifier=("email", "b@x.io")) == "b@x.io"  # the email names that profile
    p = g.profile(anonymous_id="a3")
    assert p is not None and p.identifiers["email"] == {"c@x.io"}
    assert g.resolve(identifier=("phone", "+15555550100")) == "u4"


def test_group_traits_email_is_the_companys_not_an_identifier() -> None:
    g = ir.IdentityGraph()
    g.ingest([msg("group", "m1", userId="u1", groupId="acme", traits={"email": "hi@acme.io"})])
    assert g.resolve(identifier=("email", "hi@acme.io")) is None
    company = g.company("acme")
    assert company is not None and company.traits == {"email": "hi@acme.io"}


def test_the_identifiers_extension_wins_and_odd_values_stay_traits() -> None:
    g = ir.IdentityGraph()
    g.ingest(
        [
            msg(
                "identify",
                "m1",
                userId="u1",
                identifiers={"email": "real@x.io"},
                traits={"email": "typo@x.io", "phone": ["+1", "+2"]},
            )
        ]
    )
    p = g.profile(user_id="u1")
    assert p is not None and p.identifiers.get("email") == {"real@x.io"}
    assert "phone" not in p.identifiers and p.traits["phone"] == ["+1", "+2"]


def test_device_ids_by_device_type_when_the_kinds_are_declared() -> None:
    rules = ir.Rules(kinds=["email", "phone", "api_key", "ios_id", "android_id"])
    g = ir.IdentityGraph(rules)
    g.ingest(
        [
            msg("screen", "m1", anonymousId="a1", name="Home",
                context={"device": {"id": "IOS-1", "type": "ios"}}),
            msg("screen", "m2", 1, anonymousId="a2", name="Home",
                context={"device": {"id": "AND-1", "type": "android"}}),
            msg("screen", "m3", 2, anonymousId="a3", name="Home",
                context={"device": {"id": "TV-1", "type": "tvos"}}),
        ]
    )  # fmt: skip
    assert g.resolve(identifier=("ios_id", "IOS-1")) is not None
    p = g.profile(anonymous_id="a2")
    assert p is not None and p.identifiers["android_id"] == {"AND-1"}
    p3 = g.profile(anonymous_id="a3")
    assert p3 is not None and set(p3.identifiers) == {"anonymous_id"}
    # the default kinds declare no device kind: nothing is extracted from context.device
    assert all(r.kind in ("email", "phone", "api_key") for r in ir.Rules().compiled.extraction)


def test_custom_extraction_rules_with_a_condition() -> None:
    rules = ir.Rules(
        extraction=[
            ir.Extract(
                "api_key", "properties.key", types=["track"], when={"properties.env": "live"}
            ),
            {"kind": "email", "path": "context.traits.work_email"},
        ]
    )
    g = ir.IdentityGraph(rules)
    g.ingest(
        [
            msg("track", "m1", userId="u1", event="C", properties={"key": "k1", "env": "live"}),
            msg("track", "m2", 1, userId="u2", event="C", properties={"key": "k2", "env": "test"}),
            msg("identify", "m3", 2, userId="u3", traits={"email": "x@x.io"},
                context={"traits": {"work_email": "w@x.io"}}),
        ]
    )  # fmt: skip
    assert g.resolve(identifier=("api_key", "k1")) == "u1"
    assert g.resolve(identifier=("api_key", "k2")) is None
    p = g.profile(user_id="u3")
    assert p is not None and p.identifiers["email"] == {"w@x.io"}  # traits.email is not a rule
    assert (
        ir.IdentityGraph(ir.Rules(extraction=()))
        .ingest([msg("identify", "m1", userId="u1", traits={"email": "x@x.io"})])
        .outcomes[0]
        .joined
        == ()
    )


@pytest.mark.parametrize(
    ("extraction", "words"),
    [
        ([ir.Extract("fax", "traits.fax")], "extraction[0].kind='fax'"),
        ([ir.Extract("user_id", "traits.uid")], "extraction[0].kind='user_id'"),
        ([ir.Extract("email", "traits..email")], "extraction[0].path='traits..email'"),
        ([ir.Extract("email", "traits.email", types=["alias"])], "extraction[0].types"),
        ([ir.Extract("email", "traits.email", when={"a": 3})], "extraction[0].when['a']=3"),
        ([{"kind": "email", "path": "traits.email", "if": {}}], "unknown key 'if'"),
        ([42], "extraction: 42"),
        ("traits.email", "extraction='traits.email'"),
    ],
)
def test_bad_extraction_rules_name_the_key(extraction: Any, words: str) -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        ir.Rules(extraction=extraction)
    assert words in str(info.value)


def test_the_rules_record_holds_the_extraction_and_a_store_notices_a_change(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    custom = ir.Rules(extraction=[ir.Extract("email", "properties.mail")])
    assert custom.record().digest != ir.Rules().record().digest
    assert "properties.mail" in custom.record().description
    assert custom.record().to_rules().compiled.extraction == custom.compiled.extraction
    with ir.IdentityGraph(custom, store=url) as g:
        g.ingest([msg("track", "m1", userId="u1", event="X", properties={"mail": "a@x.io"})])
    with pytest.raises(errors.ConfigurationError) as info:
        ir.IdentityGraph(store=url)
    assert "extraction" in str(info.value)
    with ir.IdentityGraph(custom, store=SQLiteStore(tmp_path / "ids.db")) as g:
        assert g.resolve(identifier=("email", "a@x.io")) == "u1"
    # rules that extract nothing record what stores written before extraction rules recorded,
    # and the error for such a store with the default rules says so
    assert "extraction" not in ir.Rules(extraction=()).record().description
    old = f"sqlite:///{tmp_path / 'old.db'}"
    with ir.IdentityGraph(ir.Rules(extraction=()), store=old) as g:
        g.identify("u1", timestamp=1)  # (SQLite records the rules with the first batch)
    with pytest.raises(errors.ConfigurationError, match=r"Rules\(extraction=\(\)\)"):
        ir.IdentityGraph(store=old)


def test_extraction_values_are_validated_naming_the_path() -> None:
    g = ir.IdentityGraph()
    report = g.ingest(
        [msg("identify", "m1", userId="u1", traits={"email": "bad\ud800"})], on_error="skip"
    )
    (error,) = report.errors
    assert error.field in ("traits", "traits.email")


_EMAILS = st.sampled_from(["ada@x.io", "ben@x.io", " ada@x.io ", "", "null"])
_WHERE = st.sampled_from(["traits", "context.traits", "properties"])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["u1", "u2", None]), st.sampled_from(["a1", "a2"]), _EMAILS, _WHERE
        ),
        min_size=1,
        max_size=6,
    ),
    st.randoms(use_true_random=False),
)
def test_an_extracted_email_is_the_identifiers_extension(
    rows: list[tuple[str | None, str, str, str]], rnd: Any
) -> None:
    """Wherever the default rules find an email, the profiles are those of the same messages
    with ``identifiers={"email": ...}`` and extraction off, in any order."""
    extracted, explicit = [], []
    for i, (user, anon, email, where) in enumerate(rows):
        mtype = "track" if where == "properties" else "identify"
        base: dict[str, Any] = msg(mtype, f"m{i}", i, userId=user, anonymousId=anon)
        if mtype == "track":
            base["event"] = "X"
        if where == "context.traits":
            extracted.append({**base, "context": {"traits": {"email": email}}})
        else:
            extracted.append({**base, where: {"email": email}})
        explicit.append({**base, "identifiers": {"email": email}})
        if where == "traits":
            explicit[-1]["traits"] = {"email": email}
        elif where == "context.traits":
            explicit[-1]["context"] = {"traits": {"email": email}}
        else:
            explicit[-1]["properties"] = {"email": email}
    rnd.shuffle(extracted)
    g1, g2 = ir.IdentityGraph(), ir.IdentityGraph(ir.Rules(extraction=()))
    for m in extracted:
        g1.ingest([m])
    g2.ingest(explicit)
    assert profiles(g1) == profiles(g2)
    assert g1.stats().blocked_values == g2.stats().blocked_values


@pytest.mark.parametrize("types", [5, None, 1.5, object()])
def test_extraction_types_of_the_wrong_shape_are_a_configuration_error(types: Any) -> None:
    # (a raw TypeError "'int' object is not iterable" before, from Extract and from Rules)
    with pytest.raises(errors.ConfigurationError, match=r"types=") as info:
        ir.Extract("email", "traits.email", types=types)
    assert repr(types)[:20] in str(info.value)
    with pytest.raises(errors.ConfigurationError, match=r"types="):
        ir.Rules(extraction=[{"kind": "email", "path": "traits.email", "types": types}])
