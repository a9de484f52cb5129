"""The client session (docs/integrations.md, "Session")."""

import os
import stat
import uuid
from pathlib import Path

import pytest

import identityres as ir
from identityres.integrations import GraphSink
from identityres.integrations.session import (
    CookiePersistence,
    JsonFilePersistence,
    MemoryPersistence,
    Session,
)


def test_anonymous_id_is_a_uuid4_made_once_and_persisted(tmp_path: Path) -> None:
    path = tmp_path / "state" / "session.json"
    first = Session(GraphSink(ir.IdentityGraph()), persistence=JsonFilePersistence(path))
    anon = first.anonymous_id
    assert uuid.UUID(anon).version == 4 and first.anonymous_id == anon
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # owner only
    again = Session(GraphSink(ir.IdentityGraph()), persistence=JsonFilePersistence(path))
    assert again.anonymous_id == anon


def test_a_damaged_session_file_starts_anew(tmp_path: Path) -> None:
    path = tmp_path / "session.json"
    path.write_text("{not json")
    session = Session(GraphSink(ir.IdentityGraph()), persistence=JsonFilePersistence(path))
    assert uuid.UUID(session.anonymous_id).version == 4


def test_the_journey_docs_login_track_company() -> None:
    graph = ir.IdentityGraph()
    session = Session(GraphSink(graph))
    anon = session.anonymous_id
    session.track("Docs viewed", {"path": "/docs"})
    session.identify_user("usr_ada", {"plan": "free"})
    session.identify_company("acme", {"seats": 3})
    session.track("Dashboard viewed")
    assert session.flush()
    p = graph.profile(user_id="usr_ada")
    assert p is not None and p.anonymous_ids == {anon} and p.traits == {"plan": "free"}
    assert p.company_id == "acme" and graph.company("acme").traits == {"seats": 3}
    assert graph.stats().events == 4 and len(list(graph.profiles())) == 1


def test_reset_rotates_the_id_and_a_second_user_is_not_merged() -> None:
    graph = ir.IdentityGraph()
    session = Session(GraphSink(graph))
    session.identify_user("usr_ada")
    old = session.anonymous_id
    new = session.reset()
    assert new != old and session.anonymous_id == new and session.user_id is None
    session.identify_user("usr_bob")
    ada, bob = graph.profile(user_id="usr_ada"), graph.profile(user_id="usr_bob")
    assert ada is not None and bob is not None and ada.anonymous_ids == {old}
    assert bob.anonymous_ids == {new}


def test_without_reset_a_second_user_on_the_device_is_refused_not_merged() -> None:
    graph = ir.IdentityGraph()
    session = Session(GraphSink(graph))
    session.identify_user("usr_ada")
    session.identify_user("usr_bob")  # same device, nobody logged out
    assert graph.resolve(anonymous_id=session.anonymous_id) == "usr_ada"
    (refusal,) = graph.refusals()
    assert refusal.reason is ir.Reason.LIMIT_EXCEEDED


def test_event_ids_and_timestamps_are_fixed_so_a_retry_is_a_duplicate() -> None:
    graph = ir.IdentityGraph()
    session = Session(GraphSink(graph))
    sent = session.track("Clicked", {"button": "buy"})
    report = graph.ingest([sent])  # the same message delivered again
    assert report.duplicates == 1 and graph.stats().events == 1
    assert uuid.UUID(sent["messageId"]).version == 4 and sent["timestamp"].endswith("+00:00")


def test_bad_input_raises_and_sends_nothing() -> None:
    graph = ir.IdentityGraph()
    session = Session(GraphSink(graph))
    with pytest.raises(ir.IdentifierTypeError):
        session.identify_user(1.5)  # type: ignore[arg-type]
    with pytest.raises(ir.InvalidEventError):
        session.track("Seen", {"bad": {1, 2}})
    assert graph.stats().events == 0 and session.user_id is None


def test_cookie_persistence_reads_the_request_and_sets_the_response_cookie() -> None:
    graph = ir.IdentityGraph()
    fresh = CookiePersistence(None)
    session = Session(GraphSink(graph), persistence=fresh)
    session.track("Docs viewed")
    ((name, value),) = fresh.headers
    assert name == "Set-Cookie" and value.startswith(f"ajs_anonymous_id={session.anonymous_id};")
    assert "Secure" in value and "HttpOnly" in value and "SameSite=Lax" in value

    # the next request carries the cookie: same id, nothing to set
    returning = CookiePersistence(f"theme=dark; ajs_anonymous_id={session.anonymous_id}")
    later = Session(GraphSink(graph), persistence=returning)
    later.identify_user("usr_ada")
    assert later.anonymous_id == session.anonymous_id and returning.headers == []
    # the user id never goes into a cookie
    assert CookiePersistence("ajs_anonymous_id=a").load() == {"anonymous_id": "a"}
    later.reset()
    assert "usr_ada" not in returning.headers[0][1]
    assert graph.resolve(anonymous_id=session.anonymous_id) == "usr_ada"


def test_memory_persistence_and_a_graph_sink_through_the_background_queue() -> None:
    graph = ir.IdentityGraph()
    store = MemoryPersistence()
    session = Session(graph, persistence=store)  # a graph: written by a background queue
    session.identify_user("usr_1")
    assert session.flush(5) and graph.resolve(anonymous_id=session.anonymous_id) == "usr_1"
    assert store.state == {"anonymous_id": session.anonymous_id, "user_id": "usr_1"}
    session.close()
