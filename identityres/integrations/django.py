"""Django helper (docs/integrations.md, "Django"). Wrap the WSGI application in
:class:`~identityres.integrations.wsgi.IdentityMiddleware` and add
``"identityres.integrations.django.RouteMiddleware"`` to ``MIDDLEWARE`` so that each call
records its route template (``/items/<int:pk>/``). Nothing here imports Django."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from identityres.integrations.wsgi import ROUTE_KEY

__all__ = ["RouteMiddleware"]


class RouteMiddleware:
    """Django middleware that puts the matched URL pattern into ``request.META`` (the WSGI
    environ, where the identityres middleware reads it)."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)

    def process_view(self, request: Any, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
        match = getattr(request, "resolver_match", None)
        route = getattr(match, "route", None)
        if isinstance(route, str) and route:
            request.META[ROUTE_KEY] = route if route.startswith("/") else "/" + route
