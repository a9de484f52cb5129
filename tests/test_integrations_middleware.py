"""The server middleware (docs/integrations.md): pure WSGI and ASGI, and under Flask, Django,
Starlette and FastAPI through their test clients."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

import identityres as ir
from identityres.integrations import EventQueue, GraphSink
from identityres.integrations.asgi import IdentityMiddleware as AsgiMiddleware
from identityres.integrations.wsgi import IdentityMiddleware as WsgiMiddleware
from identityres.integrations.wsgi import api_key_identifier
from identityres.testing import snapshot
from tests.integration_apps import SECRET, django_wsgi, fastapi_app, flask_app, starlette_app

# -- helpers --------------------------------------------------------------------------------


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def call_wsgi(
    app: Any, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[str, bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    seen: list[str] = []
    body = app(environ, lambda status, headers, exc_info=None: seen.append(status))
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return seen[0], data


def api_calls(graph: ir.IdentityGraph) -> list[ir.Profile]:
    return sorted(graph.profiles(), key=lambda p: p.user_id)


def stored_text(graph: ir.IdentityGraph) -> str:
    return json.dumps(snapshot(graph), default=str)


# -- identity ----------------------------------------------------------------------------


def test_wsgi_records_user_company_cookie_and_hashed_key() -> None:
    graph = ir.IdentityGraph()
    app = WsgiMiddleware(
        hello,
        sink=GraphSink(graph),
        identify_user=lambda environ, response: environ.get("app.user"),
        identify_company=lambda environ, response: "acme",
        api_key_secret=SECRET,
    )

    def authenticated(environ: dict[str, Any], start_response: Any) -> Any:
        environ["app.user"] = "usr_ada"
        return app(environ, start_response)

    status, body = call_wsgi(
        authenticated,
        headers={
            "Authorization": "Bearer sk_live_secret",
            "Cookie": "a=1; ajs_anonymous_id=%22anon-1%22",
        },
    )
    assert (status, body) == ("200 OK", b"hello")
    p = graph.profile(user_id="usr_ada")
    assert p is not None and p.anonymous_ids == {"anon-1"} and p.company_id == "acme"
    assert p.identifiers["api_key"] == {api_key_identifier(SECRET, "sk_live_secret")}
    assert "sk_live_secret" not in stored_text(graph)  # the raw token is never stored
    assert app.stats.calls == 1 and app.stats.events == 2  # the track and one group


def test_api_key_header_is_hashed_and_links_to_the_key_owner() -> None:
    graph = ir.IdentityGraph()
    key = api_key_identifier(SECRET, "key-123")
    graph.track("API key created", user_id="usr_1", identifiers={"api_key": key}, timestamp=1)
    app = WsgiMiddleware(hello, sink=GraphSink(graph), api_key_secret=SECRET)
    call_wsgi(app, headers={"X-API-Key": "key-123"})
    assert graph.resolve(identifier=("api_key", key)) == "usr_1"
    assert graph.stats().events == 2 and "key-123" not in stored_text(graph)


def test_no_secret_means_no_key_identifier_and_never_the_raw_token() -> None:
    graph = ir.IdentityGraph()
    app = WsgiMiddleware(hello, sink=GraphSink(graph))
    call_wsgi(app, headers={"Authorization": "Bearer tok", "X-API-Key": "key"})
    assert list(graph.profiles()) == [] and app.stats.unidentified == 1


def test_forged_x_user_id_is_ignored_by_default() -> None:
    graph = ir.IdentityGraph()
    app = WsgiMiddleware(hello, sink=GraphSink(graph))
    call_wsgi(app, headers={"X-User-Id": "usr_admin", "Cookie": "ajs_anonymous_id=anon-9"})
    assert graph.resolve(user_id="usr_admin") is None
    assert [p.user_id for p in graph.profiles()] == ["anon-9"]


def test_forged_x_user_id_is_ignored_by_default_on_asgi() -> None:
    from starlette.testclient import TestClient

    graph = ir.IdentityGraph()
    with TestClient(starlette_app(GraphSink(graph))) as client:
        assert client.get("/items/1", headers={"X-User-Id": "usr_admin"}).status_code == 200
    assert graph.resolve(user_id="usr_admin") is None and list(graph.profiles()) == []


def test_a_trusted_header_is_read_when_configured() -> None:
    graph = ir.IdentityGraph()
    app = WsgiMiddleware(
        hello,
        sink=GraphSink(graph),
        trusted_user_header="X-User-Id",
        trusted_company_header="X-Org-Id",
    )
    call_wsgi(app, headers={"X-User-Id": "usr_1", "X-Org-Id": "acme"})
    p = graph.profile(user_id="usr_1")
    assert p is not None and p.company_id == "acme"


def test_jwt_claims_come_only_from_the_verifier() -> None:
    graph = ir.IdentityGraph()
    good = "header.payload.signature"

    def verify(token: str) -> dict[str, Any] | None:
        return {"sub": "usr_7", "org": "acme"} if token == good else None

    app = WsgiMiddleware(
        hello,
        sink=GraphSink(graph),
        verify_jwt=verify,
        jwt_company_claim="org",
        api_key_secret=SECRET,
    )
    call_wsgi(app, headers={"Authorization": f"Bearer {good}"})
    p = graph.profile(user_id="usr_7")
    assert p is not None and p.company_id == "acme"
    assert "api_key" not in p.identifiers  # a verified session token is not an API key
    # a token the verifier refuses gives no user: it is only a credential, hashed
    call_wsgi(app, headers={"Authorization": "Bearer forged.jwt.token"})
    assert graph.resolve(user_id="usr_7") == "usr_7" and len(list(graph.profiles())) == 2


# -- failures never break the request -------------------------------------------------------


def test_raising_hooks_are_counted_and_the_request_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    graph = ir.IdentityGraph()

    def broken(environ: Any, response: Any) -> Any:
        raise KeyError("no user")

    app = WsgiMiddleware(
        hello,
        sink=GraphSink(graph),
        identify_user=broken,
        identify_company=broken,
        get_metadata=lambda environ, response: {"bad": object()},
        skip=broken,
    )
    with caplog.at_level(logging.WARNING, "identityres.integrations"):
        status, body = call_wsgi(app, headers={"Cookie": "ajs_anonymous_id=anon-1"})
    assert (status, body) == ("200 OK", b"hello")
    assert app.stats.hook_errors == 4 and app.stats.calls == 1
    assert "identify_user hook raised" in caplog.text
    assert graph.resolve(anonymous_id="anon-1") == "anon-1"  # recorded without them


def test_a_sink_that_raises_is_counted() -> None:
    class Broken(GraphSink):
        def send(self, messages: Any) -> None:
            raise OSError("disk full")

    app = WsgiMiddleware(hello, sink=Broken(ir.IdentityGraph()))
    assert call_wsgi(app, headers={"Cookie": "ajs_anonymous_id=a"}) == ("200 OK", b"hello")
    assert app.stats.send_errors == 1


def test_a_slow_sink_does_not_slow_the_request_and_a_full_queue_drops_and_counts() -> None:
    release = threading.Event()
    written: list[int] = []

    def slow_writer(batch: list[dict[str, Any]]) -> None:
        release.wait(10)
        written.append(len(batch))

    queue = EventQueue(slow_writer, batch_size=1, max_queue=2, flush_interval=0.01)
    app = WsgiMiddleware(hello, sink=queue)
    started = time.perf_counter()
    for i in range(6):
        assert call_wsgi(app, headers={"Cookie": f"ajs_anonymous_id=a-{i}"})[0] == "200 OK"
    assert time.perf_counter() - started < 1.0  # the writer is blocked, the requests are not
    release.set()
    assert queue.flush(5)
    # at most one batch was in the writer's hands and two waited: the rest did not fit
    assert queue.stats.queued == sum(written) and 2 <= sum(written) <= 3
    assert queue.stats.dropped == 6 - sum(written)
    queue.close()


def test_the_default_graph_sink_writes_in_the_background() -> None:
    graph = ir.IdentityGraph()
    app = WsgiMiddleware(hello, sink=graph)
    call_wsgi(app, headers={"Cookie": "ajs_anonymous_id=anon-1"})
    assert app.flush(5)
    assert graph.resolve(anonymous_id="anon-1") == "anon-1" and app.stats.written == 1
    app.close()


def test_a_writer_error_is_counted_not_raised() -> None:
    def failing(batch: list[dict[str, Any]]) -> None:
        raise ConnectionError("collector down")

    queue = EventQueue(failing, flush_interval=0.01)
    app = WsgiMiddleware(hello, sink=queue)
    call_wsgi(app, headers={"Cookie": "ajs_anonymous_id=a"})
    assert queue.flush(5) and queue.stats.write_errors == 1 and queue.stats.failed == 1
    queue.close()


def test_skip_passes_the_call_through_unrecorded() -> None:
    graph = ir.IdentityGraph()
    app = WsgiMiddleware(
        hello,
        sink=GraphSink(graph),
        skip=lambda environ, response: environ["PATH_INFO"] == "/health",
    )
    assert call_wsgi(app, "/health", {"Cookie": "ajs_anonymous_id=a"}) == ("200 OK", b"hello")
    assert list(graph.profiles()) == [] and app.stats.skipped == 1


def test_wsgi_streaming_stays_streaming_and_the_call_is_recorded_on_close() -> None:
    graph = ir.IdentityGraph()
    produced: list[int] = []

    def streaming(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [])
        for i in range(3):
            produced.append(i)
            yield b"x"

    app = WsgiMiddleware(streaming, sink=GraphSink(graph))
    environ: dict[str, Any] = {"HTTP_COOKIE": "ajs_anonymous_id=a"}
    setup_testing_defaults(environ)
    body = app(environ, lambda *a: None)
    chunks = iter(body)
    assert next(chunks) == b"x" and produced == [0]  # one chunk made, one passed on
    assert list(graph.profiles()) == []  # not recorded before the response ends
    assert list(chunks) == [b"x", b"x"]
    body.close()
    assert graph.resolve(anonymous_id="a") == "a"


def test_a_raising_app_is_recorded_as_500_and_the_error_propagates() -> None:
    graph = ir.IdentityGraph()
    props: list[Any] = []

    def boom(environ: Any, start_response: Any) -> Any:
        raise RuntimeError("boom")

    def capture(environ: Any, response: Any) -> Any:
        props.append(response.status)
        return "usr_1"

    app = WsgiMiddleware(boom, sink=GraphSink(graph), identify_user=capture)
    with pytest.raises(RuntimeError, match="boom"):
        call_wsgi(app)
    assert props == [500] and graph.resolve(user_id="usr_1") == "usr_1"


def test_each_call_records_method_route_status_and_duration_never_bodies() -> None:
    messages: list[dict[str, Any]] = []

    class Capture(GraphSink):
        def send(self, batch: Any) -> None:
            messages.extend(batch)

    app = WsgiMiddleware(
        hello,
        sink=Capture(ir.IdentityGraph()),
        get_metadata=lambda environ, response: {"region": "eu"},
    )

    def routed(environ: dict[str, Any], start_response: Any) -> Any:
        environ["identityres.route"] = "/items/{id}"
        return app(environ, start_response)

    call_wsgi(routed, "/items/42?secret=1", {"Cookie": "ajs_anonymous_id=a"})
    (track,) = messages
    props = track["properties"]
    assert props["method"] == "GET" and props["route"] == "/items/{id}" and props["status"] == 200
    assert props["duration_ms"] >= 0 and props["metadata"] == {"region": "eu"}
    assert "path" not in props and "hello" not in json.dumps(track)
    assert track["event"] == "API call" and track["anonymousId"] == "a"


# -- ASGI ---------------------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def asgi_call(app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[Any]:
    sent: list[Any] = []
    queue = list(incoming)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_asgi_lifespan_passes_through_and_shutdown_flushes_the_queue() -> None:
    graph = ir.IdentityGraph()
    lifespan: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    queue = EventQueue(graph, flush_interval=60)  # only a flush writes
    app = AsgiMiddleware(inner, sink=queue)

    async def main() -> list[Any]:
        http = {
            "type": "http",
            "method": "POST",
            "path": "/x",
            "headers": [(b"cookie", b"ajs_anonymous_id=anon-1")],
        }
        await asgi_call(app, http, [{"type": "http.request", "body": b""}])
        assert list(graph.profiles()) == []
        return await asgi_call(
            app, {"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        )

    sent = run(main())
    assert lifespan == ["lifespan.startup", "lifespan.shutdown"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert graph.resolve(anonymous_id="anon-1") == "anon-1"  # flushed before shutdown completed
    queue.close()


def test_asgi_websocket_passes_through_untouched() -> None:
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, send))

    async def send(message: Any) -> None:
        pass

    graph = ir.IdentityGraph()
    app = AsgiMiddleware(inner, sink=GraphSink(graph))
    scope = {"type": "websocket", "path": "/ws", "headers": []}

    async def receive() -> dict[str, Any]:
        return {}

    run(app(scope, receive, send))
    assert seen == [(scope, send)] and app.stats.calls == 0


def test_asgi_streaming_forwards_each_chunk_before_the_app_goes_on() -> None:
    graph = ir.IdentityGraph()
    order: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            order.append(f"app {i}")
            await send({"type": "http.response.body", "body": b"x", "more_body": i < 2})

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            order.append("client")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    app = AsgiMiddleware(inner, sink=GraphSink(graph))
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"cookie", b"ajs_anonymous_id=a")],
    }
    run(app(scope, receive, send))
    assert order == ["app 0", "client", "app 1", "client", "app 2", "client"]
    assert graph.resolve(anonymous_id="a") == "a"


def test_asgi_async_hooks_and_raising_async_hooks() -> None:
    graph = ir.IdentityGraph()

    async def user(scope: Any, response: Any) -> str:
        await asyncio.sleep(0)
        return f"usr_{response.status}"

    async def broken(scope: Any, response: Any) -> str:
        raise ValueError("nope")

    async def skip(scope: Any, response: Any) -> bool:
        assert response is None
        return bool(scope["path"] == "/health")

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = AsgiMiddleware(
        inner, sink=GraphSink(graph), identify_user=user, identify_company=broken, skip=skip
    )

    async def main() -> None:
        for path in ("/x", "/health"):
            await asgi_call(
                app,
                {"type": "http", "method": "GET", "path": path, "headers": []},
                [{"type": "http.request"}],
            )

    run(main())
    assert graph.resolve(user_id="usr_201") == "usr_201"
    assert app.stats.hook_errors == 1 and app.stats.skipped == 1 and app.stats.calls == 1


# -- under the frameworks, through their test clients ----------------------------------------


def test_flask_test_client_route_template_user_and_streaming() -> None:
    graph = ir.IdentityGraph()
    app = flask_app(GraphSink(graph))
    client = app.test_client()
    # buffered: the test client then closes the body, as every WSGI server does
    response = client.get("/items/7", headers={"Authorization": "Bearer tok_ada"}, buffered=True)
    assert response.status_code == 200 and response.get_json() == {"item": 7}
    client.set_cookie("ajs_anonymous_id", "anon-s")
    streamed = client.get("/stream", buffered=True)
    assert streamed.data == b"chunk 0\nchunk 1\nchunk 2\n"
    client.set_cookie("ajs_anonymous_id", "anon-b")
    failed = client.get("/boom", buffered=True)
    assert failed.status_code == 500
    p = graph.profile(user_id="usr_ada")
    assert p is not None and p.identifiers["api_key"] == {api_key_identifier(SECRET, "tok_ada")}
    assert graph.resolve(anonymous_id="anon-s") == "anon-s"
    assert graph.resolve(anonymous_id="anon-b") == "anon-b"


def test_flask_records_the_route_template() -> None:
    messages: list[dict[str, Any]] = []

    class Capture(GraphSink):
        def send(self, batch: Any) -> None:
            messages.extend(batch)

    app = flask_app(Capture(ir.IdentityGraph()))
    client = app.test_client()
    client.set_cookie("ajs_anonymous_id", "a")
    client.get("/items/7", buffered=True)
    assert messages[0]["properties"]["route"] == "/items/<int:item_id>"


def test_django_through_a_wsgi_client() -> None:
    from werkzeug.test import Client

    messages: list[dict[str, Any]] = []
    graph = ir.IdentityGraph()

    class Capture(GraphSink):
        def send(self, batch: Any) -> None:
            messages.extend(batch)
            super().send(batch)

    client = Client(django_wsgi(Capture(graph)))
    response = client.get("/items/3/", headers={"Authorization": "Bearer tok_ada"}, buffered=True)
    assert response.status_code == 200 and response.json == {"item": 3}
    client.set_cookie("ajs_anonymous_id", "anon-d")
    streamed = client.get("/stream/", buffered=True)
    assert streamed.data == b"chunk 0\nchunk 1\nchunk 2\n"
    assert messages[0]["properties"]["route"] == "/items/<int:pk>/"
    assert graph.resolve(user_id="usr_ada") == "usr_ada"
    assert graph.resolve(anonymous_id="anon-d") == "anon-d"


def test_fastapi_test_client_async_hook_route_streaming_and_lifespan_flush() -> None:
    from starlette.testclient import TestClient

    graph = ir.IdentityGraph()
    queue = EventQueue(graph, flush_interval=60)
    app = fastapi_app(queue)
    with TestClient(app) as client:
        response = client.get("/items/5", headers={"Authorization": "Bearer tok_ada"})
        assert response.json() == {"item": 5}
        with client.stream("GET", "/stream", headers={"Cookie": "ajs_anonymous_id=anon-f"}) as r:
            assert list(r.iter_lines()) == ["chunk 0", "chunk 1", "chunk 2"]
        assert list(graph.profiles()) == []  # still queued
    # leaving the client ran the lifespan shutdown, which flushed the queue
    p = graph.profile(user_id="usr_ada")
    assert p is not None and p.identifiers["api_key"] == {api_key_identifier(SECRET, "tok_ada")}
    assert graph.resolve(anonymous_id="anon-f") == "anon-f"
    queue.close()


def test_starlette_route_template_comes_from_the_scope() -> None:
    from starlette.testclient import TestClient

    messages: list[dict[str, Any]] = []

    class Capture(GraphSink):
        def send(self, batch: Any) -> None:
            messages.extend(batch)

    with TestClient(starlette_app(Capture(ir.IdentityGraph()))) as client:
        client.get("/items/9", headers={"X-API-Key": "k-1"})
    assert messages[0]["properties"]["route"] == "/items/{item_id:int}"
    assert messages[0]["identifiers"] == {"api_key": api_key_identifier(SECRET, "k-1")}


class Exploding(dict):  # type: ignore[type-arg]
    """A mapping that raises when it is read: a failure inside the recording itself."""

    def __iter__(self) -> Any:
        raise RuntimeError("exploding mapping")

    def items(self) -> Any:
        raise RuntimeError("exploding mapping")


def test_a_failure_inside_the_recording_is_counted_and_the_call_unaffected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    graph = ir.IdentityGraph()
    wsgi = WsgiMiddleware(
        hello, sink=GraphSink(graph), get_metadata=lambda environ, response: Exploding(a=1)
    )
    with caplog.at_level(logging.ERROR, "identityres.integrations"):
        assert call_wsgi(wsgi, headers={"Cookie": "ajs_anonymous_id=a"}) == ("200 OK", b"hello")
    assert wsgi.stats.internal_errors == 1 and "exploding mapping" in caplog.text

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    asgi = AsgiMiddleware(
        inner, sink=GraphSink(graph), get_metadata=lambda scope, response: Exploding(a=1)
    )
    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    sent = run(asgi_call(asgi, scope, [{"type": "http.request"}]))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert asgi.stats.internal_errors == 1


@pytest.mark.parametrize(
    "option",
    [
        {"trusted_user_header": True},
        {"trusted_company_header": b"X-Company"},
        {"api_key_header": 5},
        {"anonymous_cookie": ["ajs_anonymous_id"]},
        {"jwt_user_claim": None},
        {"jwt_company_claim": 7},
        {"trusted_user_header": ""},
        {"record_path": "yes"},
    ],
)
def test_options_of_the_wrong_type_are_refused_when_the_middleware_is_made(
    option: dict[str, Any],
) -> None:
    # accepted before, then every call failed to record (internal_errors): all were lost
    ((name, value),) = option.items()
    for middleware in (WsgiMiddleware, AsgiMiddleware):
        with pytest.raises(ir.ConfigurationError, match="^" + re.escape(f"{name}={value!r}")):
            middleware(hello, sink=GraphSink(ir.IdentityGraph()), **option)


def test_a_company_membership_a_full_queue_dropped_is_sent_again() -> None:
    # the group message of a (user, company) pair is sent once per process: if the queue
    # dropped it, the next call must send it again, or the user never joins the company
    graph = ir.IdentityGraph()
    entered, release = threading.Event(), threading.Event()

    def slow(batch: list[dict[str, Any]]) -> None:
        entered.set()
        release.wait(10)
        graph.ingest(batch)

    queue = EventQueue(slow, batch_size=1, max_queue=1, flush_interval=60)
    app = WsgiMiddleware(
        hello,
        sink=queue,
        identify_user=lambda environ, response: "usr_ada",
        identify_company=lambda environ, response: "acme",
    )
    call_wsgi(app)  # room for one message: the track is taken, its group dropped
    assert entered.wait(10)
    call_wsgi(app)  # the track is in the writer and this call's messages are dropped
    release.set()
    assert queue.flush(10)
    entered.clear()
    queue.max_queue = 10
    for _ in range(2):
        call_wsgi(app)
    assert queue.flush(10)
    p = graph.profile(user_id="usr_ada")
    assert p is not None and p.company_id == "acme"
    queue.close()
