"""The sinks (docs/integrations.md, "Sinks and failures"): the queue's batching, and the
collector writer against a stdlib HTTP server on 127.0.0.1 (retries keep message ids)."""

import base64
import gzip
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import identityres as ir
from identityres.integrations import CollectorWriter, EventQueue, GraphSink
from identityres.integrations.sinks import CollectorError, message


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the next status of ``server.statuses`` and keeps the bodies."""

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        raw = self.rfile.read(length)
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        server: Any = self.server
        server.requests.append((self.path, dict(self.headers), json.loads(raw)))
        status = server.statuses.pop(0) if server.statuses else 200
        body = json.dumps({"success": status == 200, "code": "x", "message": "m"}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Any]:
    httpd: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.requests = []
    httpd.statuses = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_the_collector_writer_posts_segment_batches_with_the_write_key(server: Any) -> None:
    port = server.server_address[1]
    writer = CollectorWriter(f"http://wk_secret@127.0.0.1:{port}", backoff=0.01)
    assert "wk_secret" not in repr(writer)
    batch = [message("track", event="Seen", anonymousId="a-1")]
    writer(batch)
    ((path, headers, body),) = server.requests
    assert path == "/v1/batch" and headers["Content-Encoding"] == "gzip"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"wk_secret:").decode()
    assert body["batch"] == batch and "sentAt" in body


def test_a_5xx_is_retried_with_the_same_message_ids(server: Any) -> None:
    server.statuses = [503, 500]
    writer = CollectorWriter(f"http://127.0.0.1:{server.server_address[1]}", "k", backoff=0.01)
    writer([message("identify", userId="usr_1", anonymousId="a-1")])
    assert len(server.requests) == 3 and writer.stats.retries == 2
    ids = {r[2]["batch"][0]["messageId"] for r in server.requests}
    assert len(ids) == 1  # a retry the collector had applied is a duplicate there


def test_a_4xx_is_not_retried_and_the_queue_counts_the_failure(server: Any) -> None:
    server.statuses = [400]
    writer = CollectorWriter(f"http://127.0.0.1:{server.server_address[1]}", "k", backoff=0.01)
    with pytest.raises(CollectorError) as info:
        writer([message("track", event="Seen", anonymousId="a-1")])
    assert info.value.status == 400 and len(server.requests) == 1
    server.statuses = [401]
    queue = EventQueue(writer, flush_interval=0.01)
    queue.send([message("track", event="Seen", anonymousId="a-2")])
    assert queue.flush(5) and queue.stats.write_errors == 1 and queue.stats.failed == 1
    queue.close()


def test_only_http_urls_are_collectors() -> None:
    with pytest.raises(ir.ConfigurationError, match="http"):
        CollectorWriter("file:///etc/passwd")


def test_the_queue_writes_full_batches_and_the_rest_after_the_interval() -> None:
    batches: list[int] = []
    queue = EventQueue(lambda batch: batches.append(len(batch)), batch_size=3, flush_interval=0.05)
    queue.send([message("track", event="e", anonymousId=f"a-{i}") for i in range(7)])
    assert queue.flush(5)
    assert sum(batches) == 7 and max(batches) <= 3
    queue.close()
    queue.send([message("track", event="e", anonymousId="late")])  # after close: dropped
    assert queue.stats.dropped == 1


def test_queue_options_are_checked() -> None:
    with pytest.raises(ir.ConfigurationError, match="batch_size"):
        EventQueue(GraphSink(ir.IdentityGraph()).send, batch_size=0)
    with pytest.raises(ir.ConfigurationError, match="target"):
        EventQueue(42)  # type: ignore[arg-type]


def test_the_queue_loses_nothing_under_concurrent_senders() -> None:
    graph = ir.IdentityGraph()
    queue = EventQueue(graph, batch_size=50, flush_interval=0.01)

    def sender(n: int) -> None:
        for i in range(100):
            queue.send([message("track", event="e", anonymousId=f"a-{n}-{i}")])

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert queue.flush(10)
    assert queue.stats.queued == queue.stats.written == 400 and queue.stats.dropped == 0
    assert len(graph) == 400
    queue.close()
