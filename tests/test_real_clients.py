"""The official Python clients of each platform, pointed at a loopback server, drive one journey;
the payloads they post are captured as sent (gzip undone) and read back by ``ingest()`` and by
``identityres resolve`` (docs/formats.md).

The journey, the same on every platform as far as the platform has the call:

* Ada browses anonymously on her laptop (``dev-ada-1``), twice;
* she signs up there: identified as ``usr_ada`` with traits, her email among them;
* on her phone (``dev-ada-2``) she browses anonymously, and the phone is joined to her (an alias
  from the server SDKs; on Mixpanel and Amplitude, which have no alias in their Python SDKs'
  ingestion path, an event with both ids);
* she joins the company ``acme`` (with its traits);
* she logs out; the laptop's client rotates to a new anonymous id (``dev-3``), on which Ben
  browses and signs up as ``usr_ben``.

No client is mocked: each sends over HTTP with its own serialization, retries off, flushed
synchronously, so a failure fails fast instead of backing off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

import identityres as ir
from identityres import cli
from tests.capture import Captured, LoopbackServer


def _bodies(captured: list[Captured]) -> list[Any]:
    """Each request's payload as JSON: a JSON body, or Mixpanel's form field ``data``."""
    out: list[Any] = []
    for request in captured:
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            (data,) = parse_qs(request.text())["data"]
            out.append(json.loads(data))
        else:
            out.append(request.json())
    return out


def _resolved(bodies: list[Any]) -> ir.IdentityGraph:
    graph = ir.IdentityGraph()
    report = graph.ingest(bodies)
    assert report.errors == ()
    return graph


def _check_journey(
    graph: ir.IdentityGraph, *, ada_traits: dict[str, Any], company_traits: dict[str, Any]
) -> None:
    ada = graph.profile(user_id="usr_ada")
    assert ada is not None
    assert ada.anonymous_ids == {"dev-ada-1", "dev-ada-2"}
    assert ada.identifiers.get("email") == {"ada@acme.io"}  # extracted from the traits
    assert ada.traits == ada_traits
    assert ada.company_id == "acme"
    assert graph.profile(identifier=("email", "ada@acme.io")) == ada
    ben = graph.profile(user_id="usr_ben")
    assert ben is not None and ben.anonymous_ids == {"dev-3"}
    assert ben.company_id is None
    assert {p.user_id for p in graph.profiles()} == {"usr_ada", "usr_ben"}
    assert list(graph.refusals()) == []
    company = graph.company("acme")
    assert company is not None and company.traits == company_traits
    assert sorted(company.profiles) == ["usr_ada"]


def _through_the_cli(tmp_path: Path, bodies: list[Any], capsys: pytest.CaptureFixture[str]) -> Any:
    """``identityres resolve --format auto --json`` on the captured bodies, one per line."""
    log = tmp_path / "captured.jsonl"
    log.write_text("".join(json.dumps(b) + "\n" for b in bodies), encoding="utf-8")
    out = tmp_path / "profiles.jsonl"
    capsys.readouterr()
    assert cli.main(["resolve", str(log), "--format", "auto", "--json", "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["events"]["skipped"] == 0 and summary["format"] == "auto"
    profiles = {
        p["user_id"]: p for p in map(json.loads, out.read_text(encoding="utf-8").splitlines())
    }
    assert set(profiles) == {"usr_ada", "usr_ben"}
    ada = profiles["usr_ada"]
    assert ada["identifiers"]["anonymous_id"] == ["dev-ada-1", "dev-ada-2"]
    assert ada["identifiers"]["email"] == ["ada@acme.io"]
    return summary


def _resolves_right(
    bodies: list[Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    ada_traits: dict[str, Any],
    company_traits: dict[str, Any],
) -> ir.IdentityGraph:
    """The journey's profiles, from the captured bodies through ``ingest()`` and the CLI."""
    graph = _resolved(bodies)
    _check_journey(graph, ada_traits=ada_traits, company_traits=company_traits)
    _through_the_cli(tmp_path, bodies, capsys)
    return graph


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(timeout=30) as s:
        yield s


# -- Segment and RudderStack -----------------------------------------------------------------


def _segment_journey(client: Any) -> None:
    client.page(anonymous_id="dev-ada-1", name="Docs", properties={"path": "/docs"})
    client.page(anonymous_id="dev-ada-1", name="Pricing", properties={"path": "/pricing"})
    client.identify(
        user_id="usr_ada",
        anonymous_id="dev-ada-1",
        traits={"email": "ada@acme.io", "name": "Ada", "plan": "free"},
    )
    # traits for a visitor: only an anonymous id
    client.identify(anonymous_id="dev-ada-2", traits={"theme": "dark"})
    client.screen(anonymous_id="dev-ada-2", name="Home")
    client.alias(previous_id="dev-ada-2", user_id="usr_ada")
    client.group(user_id="usr_ada", group_id="acme", traits={"name": "Acme", "seats": 5})
    client.track(user_id="usr_ada", event="Logged Out")
    client.page(anonymous_id="dev-3", name="Login")
    client.identify(user_id="usr_ben", anonymous_id="dev-3", traits={"name": "Ben"})
    client.flush()


#: Ada's traits at the end of the journey (on Amplitude, set_group adds ``company``)
ADA = {"email": "ada@acme.io", "name": "Ada", "plan": "free", "theme": "dark"}
#: the company's traits, as the Segment journey sets them
ACME = {"name": "Acme", "seats": 5}


def test_segment_analytics_python(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from segment.analytics import Client

    client = Client(
        "write-key", host=server.url, sync_mode=True, max_retries=0, timeout=5, gzip=True
    )
    _segment_journey(client)
    assert {r.path for r in server.captured} == {"/v1/batch"}
    assert any(r.headers.get("content-encoding") == "gzip" for r in server.captured)
    bodies = _bodies(server.captured)
    messages = [m for b in bodies for m in b["batch"]]
    assert [m["type"] for m in messages] == [
        "page", "page", "identify", "identify", "screen", "alias", "group", "track", "page",
        "identify",
    ]  # fmt: skip
    alias = messages[5]
    assert alias["previousId"] == "dev-ada-2" and alias["anonymousId"] is None
    _resolves_right(bodies, tmp_path, capsys, ada_traits=ADA, company_traits=ACME)


def test_rudder_sdk_python(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rudderstack.analytics.client import Client

    client = Client("write-key", host=server.url, sync_mode=True, max_retries=0, timeout=5)
    _segment_journey(client)
    bodies = _bodies(server.captured)
    assert all(r.headers.get("content-encoding") == "gzip" for r in server.captured)
    messages = [m for b in bodies for m in b["batch"]]
    identify = messages[2]
    # RudderStack sends an identify's traits under context.traits only
    assert "traits" not in identify and identify["context"]["traits"]["email"] == "ada@acme.io"
    _resolves_right(bodies, tmp_path, capsys, ada_traits=ADA, company_traits=ACME)


# -- PostHog ---------------------------------------------------------------------------------


def test_posthog(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from posthog import Posthog

    client = Posthog(
        "phc_project_key",
        host=server.url,
        sync_mode=True,
        max_retries=0,
        timeout=5,
        enable_local_evaluation=False,
    )
    anon = {"$device_id": "dev-ada-1"}  # what posthog-js puts on an anonymous event
    client.capture("$pageview", distinct_id="dev-ada-1", properties={**anon, "$pathname": "/docs"})
    client.capture("$pageview", distinct_id="dev-ada-1", properties={**anon, "$pathname": "/p"})
    client.capture(
        "$identify",
        distinct_id="usr_ada",
        properties={
            "$anon_distinct_id": "dev-ada-1",
            "$set": {"email": "ada@acme.io", "name": "Ada"},
            "$set_once": {"plan": "free"},
        },
    )
    client.capture("$screen", distinct_id="dev-ada-2", properties={"$is_identified": False})
    client.alias(previous_id="dev-ada-2", distinct_id="usr_ada")
    client.group_identify("company", "acme", {"name": "Acme"}, distinct_id="usr_ada")
    client.capture("Report Viewed", distinct_id="usr_ada", groups={"company": "acme"})
    client.set(distinct_id="usr_ada", properties={"theme": "dark"})
    client.capture("$pageview", distinct_id="dev-3", properties={"$device_id": "dev-3"})
    client.capture(
        "$identify",
        distinct_id="usr_ben",
        properties={"$anon_distinct_id": "dev-3", "$set": {"name": "Ben"}},
    )
    client.flush()
    client.shutdown()
    bodies = _bodies(server.captured)
    assert {r.path for r in server.captured} == {"/batch/"}
    events = [e["event"] for b in bodies for e in b["batch"]]
    assert "$create_alias" in events and "$groupidentify" in events and "$set" in events
    _resolves_right(bodies, tmp_path, capsys, ada_traits=ADA, company_traits={"name": "Acme"})


# -- Mixpanel --------------------------------------------------------------------------------


def test_mixpanel(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mixpanel import Consumer, Mixpanel

    consumer = Consumer(
        events_url=server.url + "/track",
        people_url=server.url + "/engage",
        groups_url=server.url + "/groups",
        retry_limit=0,
        request_timeout=5,
    )
    mp = Mixpanel("project-token", consumer=consumer)
    # Simplified ID Merge: anonymous events carry $device_id (distinct_id "$device:<id>"),
    # identified ones $user_id too; that pair joins the device. (``Mixpanel.alias`` always
    # posts to Mixpanel's own servers, whatever the consumer: not called here.)
    mp.track("$device:dev-ada-1", "Page Viewed", {"$device_id": "dev-ada-1"})
    mp.track("$device:dev-ada-1", "Page Viewed", {"$device_id": "dev-ada-1"})
    mp.track("usr_ada", "Signed Up", {"$device_id": "dev-ada-1", "$user_id": "usr_ada"})
    mp.people_set("usr_ada", {"$email": "ada@acme.io", "$name": "Ada", "plan": "free"})
    mp.people_set_once("usr_ada", {"theme": "dark"})
    mp.track("$device:dev-ada-2", "Screen Viewed", {"$device_id": "dev-ada-2"})
    mp.track("usr_ada", "Logged In", {"$device_id": "dev-ada-2", "$user_id": "usr_ada"})
    mp.group_set("company", "acme", {"name": "Acme"})
    mp.track("usr_ada", "Report Viewed", {"company": "acme"})
    mp.track("$device:dev-3", "Page Viewed", {"$device_id": "dev-3"})
    mp.track("usr_ben", "Signed Up", {"$device_id": "dev-3", "$user_id": "usr_ben"})
    mp.people_set("usr_ben", {"$name": "Ben"})
    assert [r.path for r in server.captured][:4] == ["/track", "/track", "/track", "/engage"]
    bodies = _bodies(server.captured)
    # seconds with a fraction, not milliseconds
    assert 1e9 < bodies[0]["properties"]["time"] < 1e11
    _resolves_right(bodies, tmp_path, capsys, ada_traits=ADA, company_traits={"name": "Acme"})


# -- Amplitude -------------------------------------------------------------------------------


def test_amplitude_analytics(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from amplitude import Amplitude, BaseEvent, Config, EventOptions, Identify

    logging.getLogger("amplitude").setLevel(logging.CRITICAL)
    config = Config(
        server_url=server.url + "/2/httpapi",
        flush_queue_size=1,
        flush_max_retries=1,
        flush_interval_millis=100,
        min_id_length=1,
    )
    client = Amplitude("api-key", configuration=config)
    client.track(BaseEvent("Page Viewed", device_id="dev-ada-1", time=1_715_000_000_000))
    client.track(BaseEvent("Page Viewed", device_id="dev-ada-1", time=1_715_000_001_000))
    traits = Identify().set("email", "ada@acme.io").set("name", "Ada").set_once("plan", "free")
    client.identify(traits, EventOptions(user_id="usr_ada", device_id="dev-ada-1"))
    client.track(BaseEvent("Screen Viewed", device_id="dev-ada-2", time=1_715_000_002_000))
    client.track(BaseEvent("Logged In", user_id="usr_ada", device_id="dev-ada-2"))
    client.set_group("company", "acme", EventOptions(user_id="usr_ada"))
    client.group_identify("company", "acme", Identify().set("name", "Acme"))
    client.identify(Identify().set("theme", "dark"), EventOptions(user_id="usr_ada"))
    client.track(BaseEvent("Page Viewed", device_id="dev-3"))
    client.track(BaseEvent("Signed Up", user_id="usr_ben", device_id="dev-3"))
    client.flush()
    client.shutdown()
    bodies = _bodies(server.captured)
    events = [e for b in bodies for e in b["events"]]
    assert len(events) == 10 and all(isinstance(e["time"], int) for e in events)  # ms
    graph = _resolves_right(
        bodies,
        tmp_path,
        capsys,
        # set_group also sets the group as a user property
        ada_traits={
            "email": "ada@acme.io",
            "name": "Ada",
            "plan": "free",
            "theme": "dark",
            "company": "acme",
        },
        company_traits={"name": "Acme"},
    )
    ada = graph.profile(user_id="usr_ada")
    assert ada is not None and ada.first_seen is not None
    assert ada.first_seen.timestamp() == 1_715_000_000  # milliseconds read as such
