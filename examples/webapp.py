"""A small web app with the whole journey: docs read anonymously, sign-up, login, an API key,
and an API that the key calls (docs/integrations.md, "The journey in a browser").

Run it (one worker: the users and keys live in this process's memory)::

    pip install 'identityres[test]'   # Flask and gunicorn
    WEBAPP_STORE=sqlite:///webapp.db gunicorn --chdir examples --workers 1 webapp:app

Three integrations meet here:

* the pages keep the browser's anonymous id in the ``ajs_anonymous_id`` cookie through a
  :class:`~identityres.integrations.session.Session` with a ``CookiePersistence``: the docs
  page tracks "Docs viewed", sign-up and login identify the user, logout resets;
* creating a key records "API key created" with the user id and the key's HMAC identifier;
* the middleware records every ``/api/`` call with the key's identifier, never the key.

All of it goes to one :class:`~identityres.integrations.EventQueue` writing the store.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import os
import secrets
from typing import Any

import flask

import identityres as ir
from identityres.integrations import EventQueue
from identityres.integrations.flask import init_app
from identityres.integrations.session import CookiePersistence, Session
from identityres.integrations.sinks import message
from identityres.integrations.wsgi import api_key_identifier

STORE = os.environ.get("WEBAPP_STORE", "sqlite:///webapp.db")
#: the service secret: the key of the API key HMAC and of Flask's session cookie
SECRET = os.environ.get("WEBAPP_SECRET", "dev-only-secret-change-me-0123456789").encode()
#: the example runs on http://127.0.0.1; behind HTTPS, leave the cookie Secure
SECURE_COOKIES = os.environ.get("WEBAPP_SECURE_COOKIES", "0") == "1"

graph = ir.IdentityGraph(store=STORE)
events = EventQueue(graph, flush_interval=0.2)

app = flask.Flask("webapp", root_path=os.path.dirname(os.path.abspath(__file__)))
app.secret_key = SECRET

#: username -> (salt, password hash); API key identifier -> user id (a real app has a database)
USERS: dict[str, tuple[bytes, bytes]] = {}
KEYS: dict[str, str] = {}


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 100_000)


def browser() -> Session:
    """This request's client session: its anonymous id lives in the browser's cookie."""
    if "browser" not in flask.g:
        jar = CookiePersistence(flask.request.headers.get("Cookie"), secure=SECURE_COOKIES)
        flask.g.jar = jar
        flask.g.browser = Session(events, persistence=jar)
    session: Session = flask.g.browser
    return session


@app.after_request
def set_cookies(response: flask.Response) -> flask.Response:
    jar = flask.g.get("jar")
    if jar is not None:
        for name, value in jar.headers:
            response.headers.add(name, value)
    return response


def page(title: str, body: str) -> str:
    user = flask.session.get("user")
    who = f"signed in as <b id='user'>{html.escape(user)}</b>" if user else "not signed in"
    return (
        f"<!doctype html><html><head><title>{html.escape(title)}</title></head><body>"
        f"<nav><a href='/docs'>Docs</a> <a href='/signup'>Sign up</a> "
        f"<a href='/login'>Log in</a> <span>{who}</span></nav><h1>{html.escape(title)}</h1>"
        f"{body}</body></html>"
    )


def account_form(action: str, label: str) -> str:
    return (
        f"<form method='post' action='{action}'>"
        "<input id='username' name='username' placeholder='username'>"
        "<input id='password' name='password' type='password' placeholder='password'>"
        f"<button id='submit' type='submit'>{label}</button></form>"
    )


@app.get("/docs")
def docs() -> str:
    browser().track("Docs viewed", {"page": "/docs"})
    return page(
        "Docs", "<p>Sign up to get an API key.</p><a id='signup' href='/signup'>Sign up</a>"
    )


@app.get("/signup")
def signup_form() -> str:
    return page("Sign up", account_form("/signup", "Sign up"))


@app.post("/signup")
def signup() -> Any:
    name = flask.request.form["username"].strip()
    if not name or name in USERS:
        return page("Sign up", "<p>That name is taken.</p>"), 400
    salt = secrets.token_bytes(16)
    USERS[name] = (salt, _hash(flask.request.form["password"], salt))
    return _signed_in(f"usr_{name}", "Signed up")


@app.get("/login")
def login_form() -> str:
    return page("Log in", account_form("/login", "Log in"))


@app.post("/login")
def login() -> Any:
    name = flask.request.form["username"].strip()
    known = USERS.get(name)
    if known is None or not hmac.compare_digest(
        known[1], _hash(flask.request.form["password"], known[0])
    ):
        return page("Log in", "<p>Wrong name or password.</p>"), 401
    return _signed_in(f"usr_{name}", "Logged in")


def _signed_in(user_id: str, event: str) -> Any:
    flask.session["user"] = user_id
    session = browser()
    session.identify_user(user_id)
    session.track(event)
    return flask.redirect("/account", code=303)


@app.post("/logout")
def logout() -> Any:
    flask.session.clear()
    browser().reset()  # the next person on this browser starts with a new anonymous id
    return flask.redirect("/docs", code=303)


@app.get("/account")
def account() -> Any:
    if "user" not in flask.session:
        return flask.redirect("/login", code=303)
    return page(
        "Account",
        "<form method='post' action='/keys'><button id='create-key'>Create an API key"
        "</button></form><form method='post' action='/logout'><button id='logout'>Log out"
        "</button></form>",
    )


@app.post("/keys")
def create_key() -> Any:
    user = flask.session.get("user")
    if user is None:
        return flask.redirect("/login", code=303)
    token = "sk_" + secrets.token_urlsafe(24)
    key_id = api_key_identifier(SECRET, token)
    KEYS[key_id] = user  # only the identifier is kept, as the graph keeps it
    events.send(
        [message("track", event="API key created", userId=user, identifiers={"api_key": key_id})]
    )
    return page("Your API key", f"<p>Shown once: <code id='api-key'>{token}</code></p>")


@app.get("/api/v1/me")
def me() -> Any:
    token = flask.request.headers.get("X-API-Key", "")
    user = KEYS.get(api_key_identifier(SECRET, token)) if token else None
    if user is None:
        return {"error": "unknown API key"}, 401
    flask.request.environ["webapp.user"] = user
    return {"user": user}


middleware = init_app(
    app,
    sink=events,
    identify_user=lambda environ, response: environ.get("webapp.user"),
    api_key_secret=SECRET,
    skip=lambda environ, response: not environ.get("PATH_INFO", "").startswith("/api/"),
)
