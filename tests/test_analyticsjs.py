"""Segment's real browser library, analytics.js (``@segment/analytics-next``, its standalone
bundle, as the classic snippet loads it), in headless Chromium, sending to a running
``identityres serve`` (docs/integrations.md, "analytics.js and the RudderStack JS SDK").

A small static server on 127.0.0.1 plays Segment's CDN: it serves the page, the bundle and its
chunks under ``/analytics-next/bundles/``, and the source's settings under
``/v1/projects/<writeKey>/settings``, whose ``Segment.io`` integration points analytics.js at
the collector (docs/decisions.md says why the collector does not serve them). The page and the
collector are on different ports, so the browser posts cross-origin, as on a real site.

Needs the npm package at :data:`BUNDLE` (``npm ci --prefix tests/js``; ``.ci/run`` runs it)
and Debian's ``chromium`` and ``chromium-driver``.
"""

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.test_browser_journey import WAIT, chrome
from tests.test_integrations_servers import KEY, ROOT, profiles_of, serving

pytestmark = pytest.mark.slow

#: the package's version, pinned in tests/js/package.json (and its lock file)
VERSION = json.loads((ROOT / "tests" / "js" / "package.json").read_text())["dependencies"][
    "@segment/analytics-next"
]
#: where ``npm ci --prefix tests/js`` puts the standalone bundle and its chunks
BUNDLE = ROOT / "tests/js/node_modules/@segment/analytics-next/dist/umd"

PAGE = """<!doctype html>
<html><head><title>shop</title>
<script>
  // what Segment's snippet leaves for the bundle: the write key and where the "CDN" is
  window.analytics = [];
  window.analytics._writeKey = {key};
  window.analytics._cdn = {cdn};
</script>
<script src="/analytics-next/bundles/standalone.js"></script>
</head><body>shop</body></html>
"""


def settings(collector: str, delivery: str) -> dict[str, Any]:
    """The source's settings, as Segment's CDN answers them, pointed at the collector."""
    segmentio: dict[str, Any] = {
        "apiKey": KEY,
        "apiHost": collector.removeprefix("http://") + "/v1",
        "protocol": "http",
    }
    if delivery == "batching":  # posts /v1/b with several messages
        segmentio["deliveryStrategy"] = {
            "strategy": "batching",
            "config": {"size": 3, "timeout": 200},
        }
    return {
        "integrations": {"Segment.io": segmentio},
        "plan": {},
        "metrics": {"sampleRate": 0},  # no metrics posted to api.segment.io
    }


@contextlib.contextmanager
def cdn(collector: str, delivery: str) -> Iterator[str]:
    """A static server on 127.0.0.1 playing Segment's CDN, until the block ends."""
    if not (BUNDLE / "standalone.js").is_file():
        pytest.fail(
            f"analytics.js is not installed: {BUNDLE / 'standalone.js'} is missing; install "
            f"@segment/analytics-next@{VERSION} with `npm ci --prefix tests/js` "
            "(.ci/run does it)"
        )
    answers: dict[str, tuple[str, bytes]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in answers:
                kind, body = answers[path]
            elif path.startswith("/analytics-next/bundles/") and "/" not in path[24:]:
                file = BUNDLE / path[24:]
                if not file.is_file():
                    self.send_error(404)
                    return
                kind, body = "application/javascript", file.read_bytes()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: pytest shows the failures

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    page = PAGE.replace("{key}", json.dumps(KEY)).replace("{cdn}", json.dumps(base))
    answers["/"] = ("text/html", page.encode())
    answers[f"/v1/projects/{KEY}/settings"] = (
        "application/json",
        json.dumps(settings(collector, delivery)).encode(),
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base
    finally:
        server.shutdown()
        server.server_close()


def call(driver: Any, script: str) -> Any:
    """Run ``script`` (which may ``await``) in the page; its ``return`` value comes back."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"(async () => {{ {script} }})().then(done, (e) => done('failed: ' + e));"
    )


def wait_for_events(db: Path, count: int, logs: Any) -> None:
    """Until the collector's store holds ``count`` events: analytics.js posts in its own time
    (and, batching, on a timer)."""
    deadline = time.monotonic() + WAIT
    seen = -1
    while time.monotonic() < deadline:
        if db.exists():
            with profiles_of(db) as graph:
                seen = graph.stats().events
            if seen >= count:
                return
        time.sleep(0.2)
    raise AssertionError(f"the store holds {seen} events, not {count}; the browser: {logs()}")


@pytest.mark.parametrize("delivery", ["standard", "batching"])
def test_analytics_js_in_a_browser_sends_to_identityres_serve(
    tmp_path: Path, delivery: str
) -> None:
    db = tmp_path / "collected.db"
    with serving(db, tmp_path / "server.log") as collector, cdn(collector, delivery) as site:
        driver: Any = chrome()
        try:
            driver.set_script_timeout(WAIT)
            driver.get(site + "/")
            ready = call(
                driver,
                "while (typeof window.analytics.user !== 'function')"
                " await new Promise((r) => setTimeout(r, 50));"
                "return window.analytics.VERSION;",
            )
            assert ready == VERSION
            first = call(driver, "await analytics.page(); return analytics.user().anonymousId();")
            call(
                driver,
                "await analytics.identify('usr_ajs', {email: 'ajs@acme.io', plan: 'pro'});"
                "await analytics.track('Signed up', {source: 'docs'});"
                "await analytics.group('acme', {name: 'Acme', seats: 5});",
            )
            # a logout: analytics.js forgets the user and makes a new anonymous id
            second = call(driver, "analytics.reset(); return analytics.user().anonymousId();")
            call(
                driver,
                "await analytics.page();await analytics.identify('usr_ben', {name: 'Ben'});",
            )
            assert isinstance(first, str) and isinstance(second, str) and first != second
            wait_for_events(db, 6, lambda: driver.get_log("browser"))
        finally:
            driver.quit()

    # what reached the collector (uvicorn's access log): cross-origin posts, after preflights
    log = (tmp_path / "server.log").read_text()
    posted = {p for p in ("/v1/p", "/v1/i", "/v1/t", "/v1/g", "/v1/b") if f"POST {p} " in log}
    assert posted == ({"/v1/b"} if delivery == "batching" else {"/v1/p", "/v1/i", "/v1/t", "/v1/g"})
    assert "OPTIONS /v1/" in log
    with profiles_of(db) as graph:
        ajs = graph.profile(user_id="usr_ajs")
        assert ajs is not None
        # the anonymous id analytics.js made belongs to the user, and only that one
        assert ajs.anonymous_ids == {first}
        assert ajs.traits == {"email": "ajs@acme.io", "plan": "pro"}
        assert ajs.company_id == "acme"
        assert graph.company("acme").traits == {"name": "Acme", "seats": 5}
        # after reset, the new anonymous id is the next user's, not joined to the first
        ben = graph.profile(user_id="usr_ben")
        assert ben is not None and ben.anonymous_ids == {second} and ben.id != ajs.id
        assert ben.traits == {"name": "Ben"}
        assert graph.stats().events == 6
