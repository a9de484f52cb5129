"""The integrations under real servers on 127.0.0.1, with real HTTP clients: the middleware
under gunicorn (Flask, Django) and uvicorn (FastAPI), and the collector (``identityres serve``)
fed by the official Segment, RudderStack and PostHog SDKs. Each server is started by the test
on a free port and stopped by it (SIGTERM, the graceful way, so the shutdown flush is what is
tested), and what it wrote is read back from its SQLite store."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import identityres as ir
from identityres.integrations.wsgi import api_key_identifier
from tests.integration_apps import SECRET

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KEY = "wk_server_test_0123456789"

# a few seconds each (a server process starting and stopping): .ci/run runs them with -m slow
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running(command: list[str], port: int, log: Path, **env: str) -> Iterator[str]:
    """Run ``command`` until the block ends; yields its base URL once it accepts connections."""
    environment = {**os.environ, **env}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited: {log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the server did not start: {log.read_text()}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
        proc.send_signal(signal.SIGTERM)  # graceful: the shutdown flush is part of the test
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serving(db: Path, log: Path) -> Iterator[str]:
    """``identityres serve`` on a free port, writing ``db``, with the write key ``KEY``."""
    port = free_port()
    command = [sys.executable, "-m", "identityres", "serve", "--store", f"sqlite:///{db}"]
    with running([*command, "--port", str(port)], port, log, IDENTITYRES_WRITE_KEYS=KEY) as base:
        yield base


def gunicorn(port: int, app: str, *options: str) -> list[str]:
    """A gunicorn command line: one worker on 127.0.0.1:``port``."""
    return [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1", *options, app]


def profiles_of(db: Path) -> ir.IdentityGraph:
    return ir.IdentityGraph(store=f"sqlite:///{db}")


def calls(base: str, slash: str = "") -> None:
    """A call as Ada (bearer token), a streamed one as an anonymous browser, a forged one.
    ``slash``: Django's URLs end with one."""
    with httpx.Client(base_url=base, timeout=10) as client:
        r = client.get(f"/items/5{slash}", headers={"Authorization": "Bearer tok_ada"})
        assert r.status_code == 200 and r.json() == {"item": 5}
        client.cookies.set("ajs_anonymous_id", "anon-stream")
        with client.stream("GET", f"/stream{slash}") as streamed:
            chunks = list(streamed.iter_lines())
        assert chunks == ["chunk 0", "chunk 1", "chunk 2"]
        client.cookies.clear()
        forged = client.get(f"/items/6{slash}", headers={"X-User-Id": "usr_admin"})
        assert forged.status_code == 200


def check_profiles(db: Path) -> None:
    with profiles_of(db) as graph:
        ada = graph.profile(user_id="usr_ada")
        assert ada is not None
        assert ada.identifiers["api_key"] == {api_key_identifier(SECRET, "tok_ada")}
        assert graph.resolve(anonymous_id="anon-stream") == "anon-stream"
        assert graph.resolve(user_id="usr_admin") is None  # the forged header was ignored
        assert graph.stats().events == 2  # the forged call carried no identifier


@pytest.mark.parametrize("framework", ["flask", "django"])
def test_wsgi_middleware_under_gunicorn(framework: str, tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "calls.db"
    command = gunicorn(port, f"tests.integration_apps:{framework}_server")
    with running(
        command,
        port,
        tmp_path / "server.log",
        IDENTITYRES_TEST_APP=framework,
        IDENTITYRES_TEST_STORE=f"sqlite:///{db}",
    ) as base:
        calls(base, slash="/" if framework == "django" else "")
    check_profiles(db)


def test_asgi_middleware_under_uvicorn_flushes_on_lifespan_shutdown(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "calls.db"
    command = [
        str(BIN / "uvicorn"),
        "tests.integration_apps:fastapi_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--lifespan",
        "on",
    ]
    with running(
        command,
        port,
        tmp_path / "server.log",
        IDENTITYRES_TEST_APP="fastapi",
        IDENTITYRES_TEST_STORE=f"sqlite:///{db}",
    ) as base:
        calls(base)
    check_profiles(db)


def test_the_segment_sdk_sends_to_identityres_serve(tmp_path: Path) -> None:
    from segment.analytics import Client
    from segment.analytics.request import APIError

    db = tmp_path / "collected.db"
    errors: list[Any] = []
    with serving(db, tmp_path / "server.log") as base:
        sdk = Client(
            KEY, host=base, sync_mode=True, gzip=True, on_error=lambda e, b: errors.append(e)
        )
        sdk.page(anonymous_id="anon-sdk", name="Docs")
        sdk.identify("usr_sdk", {"plan": "pro"}, anonymous_id="anon-sdk")
        sdk.group("usr_sdk", "acme", {"seats": 10})
        sdk.track("usr_sdk", "Signed up")
        sdk.alias("usr_sdk", "usr_legacy")
        # the default, batching client: its thread sends, flush waits for it
        batching = Client(KEY, host=base, on_error=lambda e, b: errors.append(e))
        batching.track(anonymous_id="anon-2", event="Docs viewed")
        batching.identify("usr_2", anonymous_id="anon-2")
        batching.flush()
        batching.shutdown()
        wrong = Client("wk_wrong", host=base, sync_mode=True, max_retries=0)
        with pytest.raises(APIError) as refused:
            wrong.identify("usr_intruder")
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    assert errors == []
    with profiles_of(db) as graph:
        p = graph.profile(user_id="usr_sdk")
        assert p is not None and p.anonymous_ids == {"anon-sdk"} and p.traits == {"plan": "pro"}
        assert p.company_id == "acme" and graph.company("acme").traits == {"seats": 10}
        assert graph.resolve(anonymous_id="anon-2") == "usr_2"
        assert graph.resolve(user_id="usr_intruder") is None
        assert graph.stats().events == 7


def test_the_rudderstack_sdk_sends_to_identityres_serve(tmp_path: Path) -> None:
    from rudderstack.analytics.client import Client
    from rudderstack.analytics.request import APIError

    db = tmp_path / "collected.db"
    errors: list[Any] = []
    with serving(db, tmp_path / "server.log") as base:
        # as tests/test_real_clients.py configures it: gzip and basic auth are its defaults
        sdk = Client(KEY, host=base, sync_mode=True, on_error=lambda e, b: errors.append(e))
        sdk.page(anonymous_id="anon-rs", name="Docs")
        # an identify's traits travel under context.traits only (tests/test_real_clients.py)
        sdk.identify("usr_rs", {"plan": "pro", "email": "rs@acme.io"}, anonymous_id="anon-rs")
        sdk.track("usr_rs", "Signed up", {"source": "docs"})
        sdk.group("usr_rs", "acme", {"seats": 10})
        sdk.alias(previous_id="anon-rs-2", user_id="usr_rs")
        # the default, batching client: its thread sends, flush waits for it
        batching = Client(KEY, host=base, on_error=lambda e, b: errors.append(e))
        batching.track(anonymous_id="anon-rs-3", event="Docs viewed")
        batching.identify("usr_rs_2", {"name": "Ben"}, anonymous_id="anon-rs-3")
        batching.flush()
        batching.shutdown()
        wrong = Client("wk_wrong", host=base, sync_mode=True, max_retries=0)
        with pytest.raises(APIError) as refused:
            wrong.identify("usr_intruder")
        assert refused.value.status == 401
    assert errors == []
    with profiles_of(db) as graph:
        p = graph.profile(user_id="usr_rs")
        assert p is not None and p.anonymous_ids == {"anon-rs", "anon-rs-2"}
        assert p.traits == {"plan": "pro", "email": "rs@acme.io"}
        assert p.company_id == "acme" and graph.company("acme").traits == {"seats": 10}
        ben = graph.profile(user_id="usr_rs_2")
        assert ben is not None and ben.anonymous_ids == {"anon-rs-3"}
        assert ben.traits == {"name": "Ben"}
        assert graph.resolve(user_id="usr_intruder") is None
        assert graph.stats().events == 7


def test_the_posthog_sdk_sends_to_identityres_serve(tmp_path: Path) -> None:
    from posthog import Posthog

    db = tmp_path / "collected.db"
    with serving(db, tmp_path / "server.log") as base:
        sdk = Posthog(
            KEY,
            host=base,
            sync_mode=True,
            max_retries=0,
            timeout=10,
            enable_local_evaluation=False,
        )
        sdk.capture("$pageview", distinct_id="dev-ph", properties={"$device_id": "dev-ph"})
        sdk.capture(
            "$identify",
            distinct_id="usr_ph",
            properties={"$anon_distinct_id": "dev-ph", "$set": {"plan": "pro"}},
        )
        sdk.group_identify("company", "acme", {"name": "Acme"}, distinct_id="usr_ph")
        sdk.capture("Report Viewed", distinct_id="usr_ph", groups={"company": "acme"})
        sdk.flush()
        sdk.shutdown()
        wrong = Posthog("phc_wrong", host=base, sync_mode=True, max_retries=0, timeout=10)
        wrong.capture("$pageview", distinct_id="intruder")
        wrong.shutdown()
    with profiles_of(db) as graph:
        p = graph.profile(user_id="usr_ph")
        assert p is not None and p.anonymous_ids == {"dev-ph"} and p.traits == {"plan": "pro"}
        assert p.company_id == "acme" and graph.company("acme").traits == {"name": "Acme"}
        assert graph.resolve(anonymous_id="intruder") is None  # its key was refused
        # four events; the one sent with $groups is also the user's company membership
        assert graph.stats().events == 5


def test_the_middleware_sends_to_a_running_collector(tmp_path: Path) -> None:
    from werkzeug.test import Client as WsgiClient

    from identityres.integrations.wsgi import IdentityMiddleware

    def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    db = tmp_path / "collected.db"
    with serving(db, tmp_path / "server.log") as base:
        port = base.rsplit(":", 1)[1]
        middleware = IdentityMiddleware(
            hello, sink=f"http://{KEY}@127.0.0.1:{port}", api_key_secret=SECRET
        )
        client = WsgiClient(middleware)
        client.set_cookie("ajs_anonymous_id", "anon-remote")
        assert client.get("/", headers={"X-API-Key": "key-remote"}, buffered=True).data == b"ok"
        assert middleware.flush(10) and middleware.stats.written == 1
        middleware.close()
    with profiles_of(db) as graph:
        p = graph.profile(anonymous_id="anon-remote")
        assert p is not None
        assert p.identifiers["api_key"] == {api_key_identifier(SECRET, "key-remote")}
