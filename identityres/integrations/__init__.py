"""Integrations: how events get into a graph from a running service (docs/integrations.md).

* :mod:`identityres.integrations.wsgi` and :mod:`identityres.integrations.asgi`: server
  middleware that records every API call with the caller's identity;
* :mod:`identityres.integrations.session`: a client session that owns an anonymous id,
  identifies the user on login and rotates the id on logout;
* :mod:`identityres.integrations.collector`: an ASGI app that accepts the Segment HTTP API, so
  that the official SDKs can send to a graph;
* :mod:`identityres.integrations.sinks`: where the events go (a graph, a background queue, a
  remote collector).

None of these modules imports a web framework. The framework helpers
(:mod:`identityres.integrations.flask`, :mod:`identityres.integrations.django`) import their
framework when they are used, and ``identityres serve`` needs the ``identityres[serve]`` extra.
"""

from __future__ import annotations

from identityres.integrations.sinks import (
    CollectorWriter,
    EventQueue,
    GraphSink,
    GraphWriter,
    IntegrationStats,
    Sink,
    as_sink,
)

__all__ = [
    "CollectorWriter",
    "EventQueue",
    "GraphSink",
    "GraphWriter",
    "IntegrationStats",
    "Sink",
    "as_sink",
]
