"""The other platforms' messages (docs/formats.md): PostHog, Mixpanel, Amplitude HTTP API v2 and
Moesif read into the same operations; format detection, its errors, and every refusal naming
the platform's own field."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import identityres as ir
from identityres import errors


def one(graph: ir.IdentityGraph, **lookup: Any) -> ir.Profile:
    p = graph.profile(**lookup)
    assert p is not None
    return p


# -- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "fmt"),
    [
        ({"type": "track", "event": "x", "userId": "u"}, "segment"),
        ({"event": "x", "distinct_id": "u"}, "posthog"),
        ({"event": "x", "properties": {"distinct_id": "u", "token": "t"}}, "mixpanel"),
        ({"$distinct_id": "u", "$set": {"a": 1}}, "mixpanel"),
        ({"$group_key": "company", "$group_id": "acme", "$set": {}}, "mixpanel"),
        ({"event_type": "x", "user_id": "u", "time": 1}, "amplitude"),
        ({"request": {"time": "2024-01-01T00:00:00Z"}, "response": {}}, "moesif"),
        ({"user_id": "u", "metadata": {}}, "moesif"),
    ],
)
def test_detection(message: dict[str, Any], fmt: str) -> None:
    from identityres._formats import detect

    assert detect(message) == fmt


def test_a_message_no_format_fits_names_the_formats() -> None:
    g = ir.IdentityGraph()
    with pytest.raises(errors.UnknownFormatError) as info:
        g.ingest([{"type": "identify", "userId": "u"}, {"userid": "u", "evt": "x"}])
    e = info.value
    assert (e.index, e.field, e.value) == (1, "message", "{evt, userid}")
    for name in ("segment", "posthog", "mixpanel", "amplitude", "moesif"):
        assert name in e.reason
    assert isinstance(e, errors.InvalidEventError)
    assert list(g.profiles()) == []


def test_a_message_of_another_format_than_asked_is_refused() -> None:
    g = ir.IdentityGraph()
    with pytest.raises(errors.UnknownFormatError, match=r"not a posthog message.*amplitude"):
        g.ingest([{"event_type": "x", "user_id": "u"}], format="posthog")
    with pytest.raises(errors.InvalidEventError) as info:
        g.ingest([], format="snowplow")
    assert info.value.field == "format" and "moesif" in info.value.reason


def test_skip_mode_keeps_a_message_whole() -> None:
    # an Amplitude event that is a track and an identify: a bad part refuses both
    g = ir.IdentityGraph()
    report = g.ingest(
        [
            {
                "event_type": "Seen",
                "user_id": "u1",
                "time": 1_715_000_000_000,
                "insert_id": "i1",
                "user_properties": {"$set": {"bad": {1, 2}}},
            }
        ],
        on_error="skip",
    )
    assert report.outcomes == () and [e.field for e in report.errors] == ["user_properties.$set"]
    assert list(g.profiles()) == []


# -- PostHog --------------------------------------------------------------------------------


def test_posthog_anonymous_and_identified_distinct_ids() -> None:
    g = ir.IdentityGraph()
    g.ingest(
        [
            {"event": "$pageview", "distinct_id": "d1", "properties": {"$device_id": "d1"}},
            {"event": "$pageview", "distinct_id": "d2", "properties": {"$is_identified": False}},
            {"event": "x", "distinct_id": "d3", "properties": {"$process_person_profile": False}},
            {"event": "$pageview", "distinct_id": "u1", "properties": {"$device_id": "d4"}},
            {"event": "Server Event", "distinct_id": "u2"},
        ]
    )
    for anon in ("d1", "d2", "d3"):
        assert one(g, anonymous_id=anon).identified_user_id is None
    assert one(g, anonymous_id="d4").user_id == "u1"
    assert one(g, user_id="u2").anonymous_ids == frozenset()


def test_posthog_identify_alias_merge_and_person_properties() -> None:
    g = ir.IdentityGraph()
    t = "2024-05-06T09:0{}:00Z"
    report = g.ingest(
        [
            {
                "event": "$identify",
                "distinct_id": "u1",
                "timestamp": t.format(0),
                "uuid": "e1",
                "properties": {"$anon_distinct_id": "d1"},
                "$set": {"email": "a@x.io"},
                "$set_once": {"src": "ads"},
            },
            {
                "event": "$create_alias",
                "distinct_id": "d2",
                "timestamp": t.format(1),
                "uuid": "e2",
                "properties": {"distinct_id": "d2", "alias": "u1"},
            },
            {"event": "$set", "distinct_id": "u1", "$set": {"plan": "pro"}, "uuid": "e3"},
            {
                "event": "$merge_dangerously",
                "distinct_id": "u1",
                "timestamp": t.format(3),
                "uuid": "e4",
                "properties": {"alias": "u9"},
            },
        ]
    )
    assert report.errors == ()
    p = one(g, user_id="u1")
    assert p.anonymous_ids == {"d1", "d2"}
    assert p.identifiers["email"] == {"a@x.io"}
    assert p.identifiers["user_id"] == {"u1", "u9"}
    assert p.traits == {"email": "a@x.io", "src": "ads", "plan": "pro"}


def test_posthog_alias_of_an_identified_previous_id_is_refused() -> None:
    g = ir.IdentityGraph()
    with pytest.raises(errors.AliasRefusedError) as info:
        g.ingest(
            [
                {
                    "event": "$create_alias",
                    "distinct_id": "u_old",
                    "properties": {"alias": "u_new", "$is_identified": True},
                }
            ]
        )
    assert (info.value.field, info.value.value) == ("distinct_id", "u_old")


def test_posthog_groups() -> None:
    g = ir.IdentityGraph()
    g.ingest(
        [
            {
                "event": "$groupidentify",
                "distinct_id": "u1",
                "properties": {
                    "$group_type": "company",
                    "$group_key": "acme",
                    "$group_set": {"name": "Acme"},
                },
            },
            {
                "event": "$groupidentify",
                "distinct_id": "u1",
                "properties": {"$group_type": "team", "$group_key": "t1", "$group_set": {}},
            },
            {"event": "x", "distinct_id": "u1", "properties": {"$groups": {"company": "acme"}}},
        ]
    )
    assert one(g, user_id="u1").company_id == "acme"
    acme = g.company("acme")
    assert acme is not None and acme.traits == {"name": "Acme"}
    assert g.company("t1") is None


# -- Mixpanel -------------------------------------------------------------------------------


def test_mixpanel_simplified_id_merge_and_original_events() -> None:
    g = ir.IdentityGraph(clock=lambda: 1_715_000_000)  # for the events without a time
    report = g.ingest(
        [
            {"event": "A", "properties": {"distinct_id": "$device:d1", "time": 1_715_000_000}},
            {
                "event": "B",
                "properties": {
                    "distinct_id": "u1",
                    "$device_id": "d1",
                    "$user_id": "u1",
                    "time": 1_715_000_060_000,  # milliseconds
                    "$insert_id": "i2",
                },
            },
            {"event": "$identify", "properties": {"$identified_id": "u1", "$anon_id": "d2"}},
            {"event": "$create_alias", "properties": {"distinct_id": "d3", "alias": "u1"}},
            {"event": "$merge", "properties": {"$distinct_ids": ["u1", "u7"]}},
            {"$distinct_id": "u1", "$set": {"$email": "a@x.io", "$name": "Ada"}, "$time": 1},
            {"$distinct_id": "u1", "$add": {"logins": 1}},
            {"$distinct_id": "u1", "$set": {"company": ["acme"]}, "$time": 2},
            {"$group_key": "company", "$group_id": "acme", "$set": {"plan": "team"}},
        ]
    )
    assert report.errors == ()
    p = one(g, user_id="u1")
    assert p.anonymous_ids == {"d1", "d2", "d3"}
    assert p.identifiers["user_id"] == {"u1", "u7"}
    assert p.identifiers["email"] == {"a@x.io"}
    assert p.traits == {"email": "a@x.io", "name": "Ada", "company": ["acme"]}
    assert p.company_id == "acme"
    acme = g.company("acme")
    assert acme is not None and acme.traits == {"plan": "team"}
    assert p.last_seen is not None and p.last_seen.timestamp() == 1_715_000_060


def test_mixpanel_bad_time_names_its_field() -> None:
    g = ir.IdentityGraph()
    with pytest.raises(errors.InvalidTimestampError) as info:
        g.ingest([{"event": "A", "properties": {"distinct_id": "u", "time": 10**20}}])
    assert (info.value.field, info.value.value) == ("properties.time", 10**20)
    with pytest.raises(errors.InvalidEventError) as info2:
        g.ingest([{"event": "$merge", "properties": {"$distinct_ids": ["u1"]}}])
    assert info2.value.field == "properties.$distinct_ids"


# -- Amplitude ------------------------------------------------------------------------------


def test_amplitude_events_identify_and_groups() -> None:
    g = ir.IdentityGraph()
    report = g.ingest(
        [
            {
                "api_key": "k",
                "events": [
                    {"event_type": "A", "device_id": "d1", "time": 1_715_000_000_000},
                    {
                        "event_type": "$identify",
                        "user_id": "u1",
                        "device_id": "d1",
                        "time": 1_715_000_001_000,
                        "user_properties": {"$set": {"email": "a@x.io"}, "$setOnce": {"s": 1}},
                    },
                    {
                        "event_type": "B",
                        "user_id": "u1",
                        "time": 1_715_000_002_000,
                        "user_properties": {"plan": "pro"},
                        "groups": {"company": "acme"},
                        "insert_id": "b1",
                    },
                    {
                        "event_type": "$groupidentify",
                        "groups": {"company": "acme"},
                        "group_properties": {"$set": {"name": "Acme"}},
                        "time": 1_715_000_003_000,
                    },
                ],
            }
        ]
    )
    assert report.errors == () and len(report.outcomes) == 6  # B is a track, traits, a group
    assert report.indexes == (0,) * 6  # all of the one batch body given
    p = one(g, user_id="u1")
    assert p.anonymous_ids == {"d1"} and p.identifiers["email"] == {"a@x.io"}
    assert p.traits == {"email": "a@x.io", "s": 1, "plan": "pro"}
    assert p.company_id == "acme"
    assert p.first_seen is not None and p.first_seen.timestamp() == 1_715_000_000
    acme = g.company("acme")
    assert acme is not None and acme.traits == {"name": "Acme"}


def test_amplitude_time_in_seconds_is_refused_with_a_hint_of_milliseconds() -> None:
    g = ir.IdentityGraph()
    report = g.ingest(
        [{"event_type": "A", "device_id": "d1", "time": "2024-05-06T09:00:00Z"}],
        on_error="skip",
    )
    (e,) = report.errors
    assert (e.field, type(e.error)) == ("time", errors.InvalidTimestampError)
    assert "milliseconds" in e.reason


# -- Moesif ---------------------------------------------------------------------------------


def test_moesif_api_calls_users_and_companies() -> None:
    g = ir.IdentityGraph()
    report = g.ingest(
        [
            {
                "request": {"time": "2024-05-06T09:00:00Z", "verb": "GET", "uri": "/v1"},
                "response": {"status": 200},
                "user_id": "u1",
                "session_token": "key_1",
                "company_id": "acme",
                "transaction_id": "tx1",
            },
            {
                "action_name": "Clicked Upgrade",
                "request": {"time": "2024-05-06T09:01:00Z"},
                "session_token": "key_1",
            },
            {"user_id": "u1", "metadata": {"email": "a@x.io"}, "modified_time": 1_715_000_000},
            {"company_id": "acme", "metadata": {"plan": "team"}},
        ]
    )
    assert report.errors == ()
    assert g.resolve(identifier=("api_key", "key_1")) is None  # a credential: never stored
    p = one(g, identifier=("api_key", ir.session_token_identifier("key_1")))
    assert p.identifiers["api_key"] == {"st_" + hashlib.sha256(b"key_1").hexdigest()[:32]}
    assert "key_1" not in repr(list(g.profiles()))
    assert p.user_id == "u1" and p.company_id == "acme"
    assert p.traits == {"email": "a@x.io"} and p.identifiers["email"] == {"a@x.io"}
    acme = g.company("acme")
    assert acme is not None and acme.traits == {"plan": "team"}


def test_moesif_session_token_needs_the_api_key_kind() -> None:
    g = ir.IdentityGraph(ir.Rules(kinds=["email"]))
    with pytest.raises(errors.UnknownKindError) as info:
        g.ingest([{"request": {"time": 1}, "response": {}, "session_token": "k"}])
    assert info.value.field == "session_token"


# -- errors name the platform's fields ------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "error", "field"),
    [
        ({"event": "x", "distinct_id": 2.5}, errors.IdentifierTypeError, "distinct_id"),
        (
            {"event": "x", "distinct_id": "u", "properties": {"$device_id": []}},
            errors.IdentifierTypeError,
            "properties.$device_id",
        ),
        ({"event": "x", "distinct_id": "u", "timestamp": "soon"}, errors.InvalidTimestampError,
         "timestamp"),
        ({"event": "", "distinct_id": "u"}, errors.InvalidEventError, "event"),
        ({"event": "x", "distinct_id": "u", "properties": []}, errors.InvalidEventError,
         "properties"),
        ({"event_type": "x", "user_id": True}, errors.IdentifierTypeError, "user_id"),
        ({"event_type": "x", "device_id": "d", "insert_id": ""}, errors.InvalidEventError,
         "insert_id"),
        ({"event_type": "x"}, errors.InvalidEventError, "identifiers"),
        ({"$distinct_id": 3.5, "$set": {"a": 1}}, errors.IdentifierTypeError, "$distinct_id"),
        ({"$distinct_id": "u", "$set": "a"}, errors.InvalidEventError, "$set"),
        ({"event": "A", "properties": {"distinct_id": "u", "$user_id": {}}},
         errors.IdentifierTypeError, "properties.$user_id"),
        ({"request": "GET /", "response": {}}, errors.InvalidEventError, "request"),
        ({"batch": [{"event": "x", "distinct_id": "u"}, 3]}, errors.InvalidEventError,
         "batch[1]"),
    ],
)  # fmt: skip
def test_refusals_name_the_platforms_field(
    message: dict[str, Any], error: type[Exception], field: str
) -> None:
    g = ir.IdentityGraph()
    with pytest.raises(error) as info:
        g.ingest([message])
    assert isinstance(info.value, errors.ValidationError)
    assert info.value.field == field
    assert str(info.value).startswith(f"events[0]: {field}=")


# -- order and stores -----------------------------------------------------------------------

MIXED = [
    {"event": "$pageview", "distinct_id": "d1", "properties": {"$device_id": "d1"}, "uuid": "p1",
     "timestamp": "2024-05-06T09:00:00Z"},
    {"event": "$identify", "distinct_id": "u1", "properties": {"$anon_distinct_id": "d1"},
     "$set": {"email": "a@x.io"}, "uuid": "p2", "timestamp": "2024-05-06T09:01:00Z"},
    {"event_type": "Seen", "user_id": "u2", "device_id": "d1", "time": 1_714_986_180_000,
     "insert_id": "a1"},
    {"event": "B", "properties": {"distinct_id": "u2", "$device_id": "d2", "$user_id": "u2",
     "time": 1_714_986_240, "$insert_id": "m1", "company": "acme"}},
    {"request": {"time": "2024-05-06T09:05:00Z"}, "response": {}, "user_id": "u1",
     "session_token": "key_1", "transaction_id": "x1"},
    {"$group_key": "company", "$group_id": "acme", "$set": {"plan": "team"},
     "$time": 1_714_986_000},
]  # fmt: skip


def state(g: ir.IdentityGraph) -> set[Any]:
    return {
        (
            p.user_id,
            frozenset((i.kind, i.value) for i in p.all_identifiers()),
            tuple(sorted(p.traits.items())),
            p.company_id,
        )
        for p in g.profiles()
    }


@settings(max_examples=25, deadline=None)
@given(st.permutations(MIXED))
def test_mixed_platforms_give_the_same_profiles_in_any_order(stream: list[Any]) -> None:
    expected = ir.IdentityGraph()
    expected.ingest(MIXED)
    g = ir.IdentityGraph()
    for m in stream:
        assert g.ingest([m]).errors == ()
    assert state(g) == state(expected)
    # d1 is u1's (identified first); u2's event with d1 is refused
    assert one(g, anonymous_id="d1").user_id == "u1"
    assert one(g, anonymous_id="d2").user_id == "u2"


def test_company_traits_without_a_member_on_an_sqlite_store(tmp_path: Path) -> None:
    with ir.IdentityGraph(store=f"sqlite:///{tmp_path / 'ids.db'}") as g:
        g.ingest(MIXED)
        acme = g.company("acme")
        assert acme is not None and acme.traits == {"plan": "team"}
        assert sorted(acme.profiles) == ["u2"]
        assert state(g) == state(_memory(MIXED))


def _memory(events: list[Any]) -> ir.IdentityGraph:
    g = ir.IdentityGraph()
    g.ingest(events)
    return g


def test_redelivered_messages_are_duplicates() -> None:
    g = ir.IdentityGraph()
    g.ingest(MIXED)
    again = g.ingest(MIXED)
    assert again.applied == 0 and again.duplicates == len(again.outcomes)


def test_a_segment_message_cannot_claim_what_only_a_reader_says() -> None:
    # the notes a reader makes are not message keys: a group still needs a member
    g = ir.IdentityGraph()
    with pytest.raises(errors.InvalidEventError) as info:
        g.ingest([{"type": "group", "groupId": "acme", "_company_only": True}])
    assert info.value.field == "userId"
    with pytest.raises(errors.AliasRefusedError):
        g.ingest(
            [{"type": "alias", "userId": "u", "previousId": "p", "anonymousId": "a",
              "_previous_kind": "anonymous_id"}]
        )  # fmt: skip


def test_person_properties_of_events_without_an_id_are_not_one_event() -> None:
    # PostHog's uuid and Amplitude's insert_id are optional: the identify that an event's
    # person properties become must not get the id "None#set" / "None#identify", which made
    # every later such event a conflict (or a duplicate) of the first, and lost it
    g = ir.IdentityGraph()
    posthog = [
        {
            "event": "signed up",
            "distinct_id": f"usr_{n}",
            "properties": {"$set": {"plan": p}},
            "timestamp": f"2024-05-06T09:0{n}:00Z",
        }
        for n, p in ((1, "free"), (2, "pro"))
    ]
    amplitude = [
        {
            "event_type": "paid",
            "user_id": f"usr_{n}",
            "user_properties": {"tier": p},
            "time": 1_714_986_000_000 + n * 60_000,
        }
        for n, p in ((3, "gold"), (4, "silver"))
    ]
    report = g.ingest(posthog + amplitude, on_error="skip")
    assert report.errors == ()
    assert all("None" not in o.event_id for o in report.outcomes)
    traits = {uid: g.profile(user_id=uid).traits for uid in ("usr_1", "usr_2", "usr_3", "usr_4")}
    assert traits == {
        "usr_1": {"plan": "free"},
        "usr_2": {"plan": "pro"},
        "usr_3": {"tier": "gold"},
        "usr_4": {"tier": "silver"},
    }
    # and a redelivery is still a duplicate, not a second event
    again = g.ingest(posthog + amplitude)
    assert g.stats().events == 8 and len(again.outcomes) == 4 + 4
