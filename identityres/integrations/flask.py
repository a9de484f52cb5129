"""Flask helper: the WSGI middleware, plus the route template of each call
(docs/integrations.md, "Flask"). Imports Flask only when :func:`init_app` is called."""

from __future__ import annotations

from typing import Any

from identityres.integrations.wsgi import ROUTE_KEY, IdentityMiddleware

__all__ = ["init_app"]


def init_app(app: Any, *, sink: Any, **options: Any) -> IdentityMiddleware:
    """Wrap ``app.wsgi_app`` in :class:`~identityres.integrations.wsgi.IdentityMiddleware`
    (same options) and record each call's route template (``/items/<int:item_id>``).
    Returns the middleware (its ``stats``, ``flush()``)."""
    try:
        import flask
    except ImportError as exc:  # pragma: no cover - the test extra installs Flask
        raise ImportError("identityres.integrations.flask needs Flask (pip install flask)") from exc

    def record_route() -> None:
        rule = flask.request.url_rule
        if rule is not None:
            flask.request.environ[ROUTE_KEY] = rule.rule

    app.before_request(record_route)
    middleware = IdentityMiddleware(app.wsgi_app, sink=sink, **options)
    app.wsgi_app = middleware
    return middleware
