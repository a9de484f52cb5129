"""Small applications under real frameworks, wrapped in the identityres middleware: the
test clients and the real servers (gunicorn, uvicorn) run these same apps.

Configured by environment for the server processes: ``IDENTITYRES_TEST_STORE`` (a store URL the
middleware writes through an EventQueue) and ``IDENTITYRES_TEST_SECRET``.
"""

import asyncio
import os
from typing import Any

import identityres as ir
from identityres.integrations import EventQueue

SECRET = b"test-service-secret-0123456789"


def user_from_environ(environ: dict[str, Any], response: Any) -> Any:
    """The user the app authenticated (it puts the id into the environ itself)."""
    return environ.get("app.user")


def server_sink() -> Any:
    store = os.environ["IDENTITYRES_TEST_STORE"]
    # only a shutdown flush writes: the server tests check that it happens
    return EventQueue(ir.IdentityGraph(store=store), flush_interval=3600)


# -- Flask --------------------------------------------------------------------------------


def flask_app(sink: Any, **options: Any) -> Any:
    import flask

    from identityres.integrations.flask import init_app

    app = flask.Flask("flask_app")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        if flask.request.headers.get("Authorization") == "Bearer tok_ada":
            flask.request.environ["app.user"] = "usr_ada"
        return {"item": item_id}

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Any:
            for i in range(3):
                yield f"chunk {i}\n"

        return flask.Response(chunks(), mimetype="text/plain")

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("boom")

    init_app(app, sink=sink, identify_user=user_from_environ, api_key_secret=SECRET, **options)
    return app


# -- Django -------------------------------------------------------------------------------


def _django_item(request: Any, pk: int) -> Any:
    from django.http import JsonResponse

    if request.headers.get("Authorization") == "Bearer tok_ada":
        request.META["app.user"] = "usr_ada"
    return JsonResponse({"item": pk})


def _django_stream(request: Any) -> Any:
    from django.http import StreamingHttpResponse

    return StreamingHttpResponse(f"chunk {i}\n" for i in range(3))


def django_wsgi(sink: Any, **options: Any) -> Any:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="test-only",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=["identityres.integrations.django.RouteMiddleware"],
            INSTALLED_APPS=[],
            DATABASES={},
        )
        django.setup()
    from django.core.wsgi import get_wsgi_application

    from identityres.integrations.wsgi import IdentityMiddleware

    return IdentityMiddleware(
        get_wsgi_application(),
        sink=sink,
        identify_user=user_from_environ,
        api_key_secret=SECRET,
        **options,
    )


def _urlpatterns() -> list[Any]:
    try:
        from django.urls import path
    except ImportError:  # pragma: no cover
        return []
    return [path("items/<int:pk>/", _django_item), path("stream/", _django_stream)]


urlpatterns = _urlpatterns()


# -- Starlette / FastAPI ------------------------------------------------------------------


async def async_user(scope: Any, response: Any) -> Any:
    await asyncio.sleep(0)
    return scope.get("app.user")


def fastapi_app(sink: Any, **options: Any) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

    from identityres.integrations.asgi import IdentityMiddleware

    api = FastAPI()

    @api.get("/items/{item_id}")
    async def item(item_id: int, request: Request) -> Any:
        if request.headers.get("authorization") == "Bearer tok_ada":
            request.scope["app.user"] = "usr_ada"
        return {"item": item_id}

    @api.get("/stream")
    async def stream() -> Any:
        async def chunks() -> Any:
            for i in range(3):
                yield f"chunk {i}\n"
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), media_type="text/plain")

    return IdentityMiddleware(
        api, sink=sink, identify_user=async_user, api_key_secret=SECRET, **options
    )


def starlette_app(sink: Any, **options: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from identityres.integrations.asgi import IdentityMiddleware

    async def item(request: Any) -> Any:
        return JSONResponse({"item": request.path_params["item_id"]})

    app = Starlette(routes=[Route("/items/{item_id:int}", item)])
    return IdentityMiddleware(app, sink=sink, api_key_secret=SECRET, **options)


# -- for the servers ----------------------------------------------------------------------


def _server_apps() -> dict[str, Any]:
    if "IDENTITYRES_TEST_STORE" not in os.environ:
        return {}
    which = os.environ.get("IDENTITYRES_TEST_APP")
    if which == "flask":
        return {"flask_server": flask_app(server_sink())}
    if which == "django":
        return {"django_server": django_wsgi(server_sink())}
    if which == "fastapi":
        return {"fastapi_server": fastapi_app(server_sink())}
    return {}


globals().update(_server_apps())
