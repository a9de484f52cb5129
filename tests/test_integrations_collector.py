"""The collector (docs/integrations.md, "Collector"), in process, through httpx's ASGI
transport: authentication, validation, gzip, size limits."""

import asyncio
import base64
import gzip
import json
import threading
from typing import Any

import httpx
import pytest

import identityres as ir
from identityres.integrations import EventQueue
from identityres.integrations.collector import Collector

KEY = "wk_test_0123456789"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def post(
    app: Any, path: str, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
            content = raw if raw is not None else json.dumps(body).encode()
            return await client.post(path, content=content, headers=headers or {})

    return asyncio.run(go())


BATCH = {
    "batch": [
        {
            "type": "page",
            "name": "Docs",
            "anonymousId": "anon-1",
            "messageId": "m1",
            "timestamp": "2024-05-06T09:00:00Z",
        },
        {
            "type": "identify",
            "userId": "usr_1",
            "anonymousId": "anon-1",
            "messageId": "m2",
            "traits": {"plan": "free"},
            "timestamp": "2024-05-06T09:05:00Z",
        },
        {
            "type": "group",
            "groupId": "acme",
            "userId": "usr_1",
            "messageId": "m3",
            "timestamp": "2024-05-06T09:06:00Z",
        },
    ]
}


def test_a_batch_with_basic_auth_becomes_profiles() -> None:
    graph = ir.IdentityGraph()
    response = post(Collector(graph, write_keys=[KEY]), "/v1/batch", BATCH, basic(KEY))
    assert response.status_code == 200 and response.json() == {"success": True}
    p = graph.profile(user_id="usr_1")
    assert p is not None and p.anonymous_ids == {"anon-1"} and p.company_id == "acme"
    # the SDK retries: the same batch again is duplicates, not new events
    assert (
        post(Collector(graph, write_keys=[KEY]), "/v1/batch", BATCH, basic(KEY)).status_code == 200
    )
    assert graph.stats().events == 3


def test_the_write_key_may_be_in_the_body_and_a_wrong_key_is_401() -> None:
    graph = ir.IdentityGraph()
    app = Collector(graph, write_keys=["other", KEY])
    assert post(app, "/v1/batch", {**BATCH, "writeKey": KEY}).status_code == 200
    fresh = ir.IdentityGraph()
    app = Collector(fresh, write_keys=[KEY])
    refused = post(app, "/v1/batch", BATCH, basic("wk_guess"))
    assert refused.status_code == 401 and refused.json()["success"] is False
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert post(app, "/v1/batch", BATCH).status_code == 401
    assert list(fresh.profiles()) == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"batch": {"type": "track"}}', "batch: must be a list"),
        (b'{"batch": [7]}', "batch[0]: must be a message object"),
    ],
)
def test_malformed_bodies_are_400_with_the_reason(raw: bytes, reason: str) -> None:
    graph = ir.IdentityGraph()
    response = post(Collector(graph, write_keys=[KEY]), "/v1/batch", None, basic(KEY), raw=raw)
    assert response.status_code == 400 and reason in response.json()["error"]


def test_one_bad_message_refuses_the_batch_and_nothing_reaches_the_graph() -> None:
    graph = ir.IdentityGraph()
    bad = {
        "batch": [
            *BATCH["batch"],
            {
                "type": "identify",
                "userId": 3.5,
                "messageId": "m4",
                "timestamp": "2024-05-06T09:07:00Z",
            },
        ]
    }
    response = post(Collector(graph, write_keys=[KEY]), "/v1/batch", bad, basic(KEY))
    assert response.status_code == 400
    body = response.json()
    assert (
        body["index"] == 3 and body["field"] == "userId" and "must be str or int" in body["error"]
    )
    assert list(graph.profiles()) == [] and graph.stats().events == 0


def test_single_message_endpoints_and_their_types() -> None:
    graph = ir.IdentityGraph()
    app = Collector(graph, write_keys=[KEY])
    identify = {
        "userId": "usr_2",
        "anonymousId": "anon-2",
        "timestamp": "2024-05-06T09:00:00Z",
        "writeKey": KEY,
        "sentAt": "2024-05-06T09:00:01Z",
    }
    assert post(app, "/v1/identify", identify).status_code == 200
    track = {"event": "Signed up", "userId": "usr_2", "timestamp": "2024-05-06T09:01:00Z"}
    assert post(app, "/v1/track", track, basic(KEY)).status_code == 200
    alias = {"userId": "usr_2", "previousId": "anon-3", "anonymousId": "anon-3"}  # no timestamp
    assert post(app, "/v1/alias", alias, basic(KEY)).status_code == 200
    p = graph.profile(user_id="usr_2")
    assert p is not None and p.anonymous_ids == {"anon-2", "anon-3"}
    mismatch = post(app, "/v1/track", {"type": "identify", "userId": "u"}, basic(KEY))
    assert mismatch.status_code == 400 and "takes track messages" in mismatch.json()["error"]


def test_gzip_bodies_and_the_size_limits() -> None:
    graph = ir.IdentityGraph()
    app = Collector(graph, write_keys=[KEY], max_body=4096)
    zipped = gzip.compress(json.dumps(BATCH).encode())
    ok = post(app, "/v1/batch", None, {**basic(KEY), "Content-Encoding": "gzip"}, raw=zipped)
    assert ok.status_code == 200 and graph.resolve(anonymous_id="anon-1") == "usr_1"

    bomb = gzip.compress(b'{"batch": [' + b" " * 1_000_000 + b"]}")  # small on the wire
    assert len(bomb) < 4096
    big = post(app, "/v1/batch", None, {**basic(KEY), "Content-Encoding": "gzip"}, raw=bomb)
    assert big.status_code == 413
    plain = post(app, "/v1/batch", None, basic(KEY), raw=b" " * 5000)
    assert plain.status_code == 413
    broken = post(app, "/v1/batch", None, {**basic(KEY), "Content-Encoding": "gzip"}, raw=b"xx")
    assert broken.status_code == 400 and "gzip" in broken.json()["error"]


def test_wrong_method_and_unknown_path() -> None:
    app = Collector(ir.IdentityGraph(), write_keys=[KEY])

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            return await client.get("/v1/batch")

    assert asyncio.run(get()).status_code == 405
    assert post(app, "/v2/whatever", {}, basic(KEY)).status_code == 404


def test_a_queue_target_is_flushed_on_lifespan_shutdown() -> None:
    graph = ir.IdentityGraph()
    queue = EventQueue(graph, flush_interval=60)
    app = Collector(queue, write_keys=[KEY])
    from starlette.testclient import TestClient

    with TestClient(app) as client:  # runs the lifespan
        response = client.post("/v1/batch", json=BATCH, headers=basic(KEY))
        assert response.status_code == 200 and list(graph.profiles()) == []
    assert graph.resolve(anonymous_id="anon-1") == "usr_1"
    queue.close()


def test_configuration_is_checked() -> None:
    graph = ir.IdentityGraph()
    with pytest.raises(ir.ConfigurationError, match="write_keys"):
        Collector(graph, write_keys=[])
    with pytest.raises(ir.ConfigurationError, match="not one str"):
        Collector(graph, write_keys=KEY)


def test_a_store_that_fails_is_503_which_the_sdks_retry(tmp_path: Any) -> None:
    graph = ir.IdentityGraph(store=f"sqlite:///{tmp_path / 'ids.db'}")
    app = Collector(graph, write_keys=[KEY])
    graph.close()  # the store is gone: every write fails
    response = post(app, "/v1/batch", BATCH, basic(KEY))
    assert response.status_code == 503 and response.json()["code"] == "unavailable"
    assert app.stats.write_errors == 1


# -- PostHog's capture API -----------------------------------------------------------------

POSTHOG_BATCH = {
    "api_key": KEY,
    "batch": [
        {
            "event": "$pageview",
            "distinct_id": "dev-1",
            "properties": {"$device_id": "dev-1"},
            "uuid": "0190a6f0-0000-7000-8000-000000000001",
            "timestamp": "2024-05-06T09:00:00Z",
        },
        {
            "event": "$identify",
            "distinct_id": "usr_1",
            "properties": {"$anon_distinct_id": "dev-1", "$set": {"plan": "pro"}},
            "uuid": "0190a6f0-0000-7000-8000-000000000002",
            "timestamp": "2024-05-06T09:05:00Z",
        },
    ],
}


@pytest.mark.parametrize("path", ["/batch/", "/batch", "/capture/", "/e/", "/i/v0/e/"])
def test_posthog_batches_become_profiles(path: str) -> None:
    graph = ir.IdentityGraph()
    response = post(Collector(graph, write_keys=[KEY]), path, POSTHOG_BATCH)
    assert response.status_code == 200 and response.json() == {"status": 1}
    p = graph.profile(user_id="usr_1")
    assert p is not None and p.anonymous_ids == {"dev-1"} and p.traits == {"plan": "pro"}
    # a retried batch is duplicates (the events' uuids are their ids)
    assert post(Collector(graph, write_keys=[KEY]), path, POSTHOG_BATCH).status_code == 200
    assert graph.stats().events == 2


def test_a_single_posthog_event_with_its_token_and_gzip() -> None:
    graph = ir.IdentityGraph()
    event = {"token": KEY, **POSTHOG_BATCH["batch"][1]}  # type: ignore[dict-item]
    raw = gzip.compress(json.dumps(event).encode())
    response = post(
        Collector(graph, write_keys=[KEY]), "/capture/", None, {"Content-Encoding": "gzip"}, raw
    )
    assert response.status_code == 200
    assert graph.resolve(anonymous_id="dev-1") == "usr_1"


def test_posthog_events_need_the_project_key_and_bad_ones_write_nothing() -> None:
    graph = ir.IdentityGraph()
    app = Collector(graph, write_keys=[KEY])
    assert post(app, "/batch/", {**POSTHOG_BATCH, "api_key": "phc_wrong"}).status_code == 401
    no_key = {"batch": POSTHOG_BATCH["batch"]}
    assert post(app, "/batch/", no_key).status_code == 401
    bad = {
        "api_key": KEY,
        "batch": [POSTHOG_BATCH["batch"][0], {"event": "$pageview", "distinct_id": 7.5}],
    }
    response = post(app, "/batch/", bad)
    assert response.status_code == 400
    message = response.json()["message"]
    assert "batch[1]" in message and "distinct_id=7.5" in message
    assert graph.stats().events == 0  # nothing of the request reached the graph


def test_a_deeply_nested_body_is_a_400_not_a_crash() -> None:
    # json.loads raises RecursionError past ~1,000 levels: a 20 KB body must not be a 500
    graph = ir.IdentityGraph()
    app = Collector(graph, write_keys=[KEY])
    for raw in (b'{"batch": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", b"[" * 100_000):
        response = post(app, "/v1/batch", None, basic(KEY), raw=raw)
        assert response.status_code == 400 and "nested too deeply" in response.json()["error"]
    deep = b'{"api_key": "%s", "batch": [{"event": "e", "distinct_id": "d", "properties": ' % (
        KEY.encode()
    )
    deep += b'{"a": ' * 5_000 + b"1" + b"}" * 5_000 + b"}]}"
    assert post(app, "/batch/", None, raw=deep).status_code == 400
    assert app.stats.rejected == 3 and list(graph.profiles()) == []


def raw_post(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """POST straight to the ASGI app, with header bytes no HTTP client library would send."""
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
        await app(scope, receive, send)

    asyncio.run(go())
    return int(sent[0]["status"])


@pytest.mark.parametrize(
    "authorization",
    [b"Basic \xc3\xa9t\xc3\xa9", b"Basic \xff\xfe", b"Basic ====", b"Basic " + b"\xe9" * 10],
)
def test_a_malformed_authorization_header_is_a_401_not_a_crash(authorization: bytes) -> None:
    graph = ir.IdentityGraph()
    app = Collector(graph, write_keys=[KEY])
    headers = [(b"authorization", authorization)]
    assert raw_post(app, "/v1/batch", json.dumps(BATCH).encode(), headers) == 401
    # the key in the body is still read
    body = json.dumps({**BATCH, "writeKey": KEY}).encode()
    assert raw_post(app, "/v1/batch", body, headers) == 200
    assert graph.resolve(anonymous_id="anon-1") == "usr_1"


def test_a_null_timestamp_is_dated_when_the_message_arrives() -> None:
    # "A message without a timestamp is dated when it arrives" (docs/integrations.md): a
    # null is no timestamp. Behind a queue it must not be dated when the queue writes it.
    written: list[list[dict[str, Any]]] = []
    queue = EventQueue(written.append, flush_interval=60)
    app = Collector(queue, write_keys=[KEY])
    track = {"type": "track", "event": "x", "userId": "u", "messageId": "n1", "timestamp": None}
    assert post(app, "/v1/batch", {"batch": [track]}, basic(KEY)).status_code == 200
    assert queue.flush(5)
    (sent,) = written[0]
    assert isinstance(sent["timestamp"], str)
    assert ir.IdentityGraph().ingest([sent]).outcomes  # a time the graph reads
    queue.close()


def test_messages_a_full_queue_drops_are_a_503_so_the_sdk_retries() -> None:
    # a 200 tells the SDK to forget the batch: it must not be said for messages dropped
    entered, release = threading.Event(), threading.Event()
    written: list[dict[str, Any]] = []

    def slow(batch: list[dict[str, Any]]) -> None:
        entered.set()
        release.wait(10)
        written.extend(batch)

    queue = EventQueue(slow, batch_size=1, max_queue=3, flush_interval=60)
    app = Collector(queue, write_keys=[KEY])
    assert post(app, "/v1/batch", BATCH, basic(KEY)).status_code == 200
    assert entered.wait(10)  # one message in the writer, two waiting: room for one more
    refused = post(app, "/v1/batch", BATCH, basic(KEY))
    assert refused.status_code == 503 and refused.json()["code"] == "unavailable"
    release.set()
    assert queue.flush(10)
    assert post(app, "/v1/batch", BATCH, basic(KEY)).status_code == 200  # the retry fits
    queue.close()


def request(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_what_analytics_js_sends_from_a_browser() -> None:
    """analytics.js (tests/test_analyticsjs.py runs the real one): short endpoints, ``/v1/b``
    batches, the write key in the body and in basic auth, ``sentAt``, ``text/plain`` bodies,
    from another origin (CORS, and the preflight its ``Authorization`` header causes)."""
    graph = ir.IdentityGraph()
    app = Collector(graph, write_keys=[KEY])
    browser = {"Content-Type": "text/plain", "Origin": "http://shop.example"}
    page = {
        "type": "page",
        "anonymousId": "anon-ajs",
        "messageId": "ajs-1",
        "timestamp": "2024-05-06T09:00:00.000Z",
        "sentAt": "2024-05-06T09:00:00.010Z",
        "writeKey": KEY,
        "context": {"page": {"path": "/"}},
        "properties": {"path": "/"},
    }
    short = post(app, "/v1/p", page, browser)
    assert short.status_code == 200 and short.headers["access-control-allow-origin"] == "*"
    identify = {**page, "type": "identify", "messageId": "ajs-2", "userId": "usr_ajs"}
    identify["traits"] = {"plan": "pro"}
    del identify["properties"]
    # the batching delivery: /v1/b, one sentAt for the batch, the write key in each message
    batch = {
        "writeKey": KEY,
        "sentAt": "2024-05-06T09:00:05Z",
        "batch": [
            {k: v for k, v in identify.items() if k != "sentAt"},
            {**page, "type": "group", "messageId": "ajs-3", "userId": "usr_ajs", "groupId": "c1"},
        ],
    }
    assert post(app, "/v1/b", batch, {**browser, **basic(KEY)}).status_code == 200
    p = graph.profile(anonymous_id="anon-ajs")
    assert p is not None and p.user_id == "usr_ajs" and p.traits == {"plan": "pro"}
    assert p.company_id == "c1"

    asked = "authorization,content-type,x-retry-count"
    preflight = request(
        app,
        "OPTIONS",
        "/v1/t",
        headers={
            "Origin": "http://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked,
        },
    )
    assert preflight.status_code == 204 and preflight.content == b""
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-headers"] == asked
    assert "POST" in preflight.headers["access-control-allow-methods"]
    # a header list that is not one is not echoed into the answer
    odd = request(app, "OPTIONS", "/v1/t", headers={"Access-Control-Request-Headers": "a\tb;c"})
    assert odd.status_code == 204 and "access-control-allow-headers" not in odd.headers
    # refusals carry CORS headers too, so the browser's SDK can read why
    refused = post(app, "/v1/t", {**page, "writeKey": "wk_guess"}, browser)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"
    assert request(app, "OPTIONS", "/v2/whatever").status_code == 404
    assert graph.stats().events == 3
