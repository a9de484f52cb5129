"""What the WSGI and ASGI middleware share: the configuration, the identity of a call and
the messages it becomes (docs/integrations.md, "What is recorded")."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from identityres.errors import ConfigurationError
from identityres.integrations.sinks import IntegrationStats, Message, Sink, as_sink, message

__all__ = ["CallRecorder", "Response", "api_key_identifier"]

log = logging.getLogger("identityres.integrations")

Hook = Callable[[Any, "Response | None"], Any]
#: what a hook returned when it raised (or gave something unusable)
FAILED: Any = object()
#: the longest anonymous id taken from a cookie; longer values are not ids
MAX_COOKIE_ID = 200


def api_key_identifier(secret: bytes | str, credential: str) -> str:
    """The ``api_key`` identifier the middleware records for ``credential`` (a bearer token or
    API key): ``"hk_"`` and 32 hex digits of HMAC-SHA256 keyed with the service's ``secret``.
    The raw credential is never stored; without the secret the value cannot be turned back
    into it, nor tested against guesses. Record the same value when a key is created, so that
    the key's calls join its owner::

        graph.track("API key created", user_id=user.id,
                    identifiers={"api_key": api_key_identifier(SECRET, token)})
    """
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, credential.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return "hk_" + digest.hexdigest()[:32]


class Response:
    """What a hook sees of the response: ``status`` (an int) and ``headers`` (name, value
    pairs as the application sent them, names in any case)."""

    __slots__ = ("headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.headers = headers

    def header(self, name: str) -> str | None:
        """The first header of this name (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def __repr__(self) -> str:
        return f"Response(status={self.status}, headers={len(self.headers)})"


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, URL-unquoted and without the
    JSON quotes analytics.js wraps it in; ``None`` when absent or not an id (empty, too long,
    control characters)."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        key, eq, value = part.strip().partition("=")
        if eq and key == name:
            value = urllib.parse.unquote(value.strip()).strip('"').strip()
            if 0 < len(value) <= MAX_COOKIE_ID and value.isprintable():
                return value
            return None
    return None


def _identifier(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text or None


HeaderGetter = Callable[[str], "str | None"]


class CallRecorder:
    """The configuration of a middleware and what turns a call into messages."""

    def __init__(
        self,
        *,
        sink: Any,
        identify_user: Hook | None = None,
        identify_company: Hook | None = None,
        skip: Hook | None = None,
        get_metadata: Hook | None = None,
        api_key_id: Hook | None = None,
        api_key_secret: bytes | str | None = None,
        api_key_header: str | None = "X-API-Key",
        anonymous_cookie: str | None = "ajs_anonymous_id",
        trusted_user_header: str | None = None,
        trusted_company_header: str | None = None,
        verify_jwt: Callable[[str], Mapping[str, Any] | None] | None = None,
        jwt_user_claim: str = "sub",
        jwt_company_claim: str | None = None,
        event: str = "API call",
        record_path: bool = False,
        stats: IntegrationStats | None = None,
    ) -> None:
        hooks = {
            "identify_user": identify_user,
            "identify_company": identify_company,
            "skip": skip,
            "get_metadata": get_metadata,
            "api_key_id": api_key_id,
            "verify_jwt": verify_jwt,
        }
        for name, hook in hooks.items():
            if hook is not None and not callable(hook):
                raise ConfigurationError(f"{name}={hook!r}: must be a callable")
        if api_key_secret is not None and (
            not isinstance(api_key_secret, (bytes, str)) or len(api_key_secret) < 16
        ):
            raise ConfigurationError(
                "api_key_secret: must be bytes or str of at least 16 characters (a random "
                "service secret, not a password)"
            )
        if not isinstance(event, str) or not event.strip():
            raise ConfigurationError(f"event={event!r}: must be a non-empty str")
        # (checked here: a wrong type would otherwise fail the recording of every call)
        names = {
            "api_key_header": api_key_header,
            "anonymous_cookie": anonymous_cookie,
            "trusted_user_header": trusted_user_header,
            "trusted_company_header": trusted_company_header,
            "jwt_user_claim": jwt_user_claim,
            "jwt_company_claim": jwt_company_claim,
        }
        for name, value in names.items():
            if value is None and name != "jwt_user_claim":
                continue
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(
                    f"{name}={value!r}: must be a non-empty str"
                    + ("" if name == "jwt_user_claim" else " or None")
                )
        if not isinstance(record_path, bool):
            raise ConfigurationError(f"record_path={record_path!r}: must be True or False")
        self.stats = stats if stats is not None else IntegrationStats()
        self.sink: Sink = as_sink(sink, self.stats)
        self.identify_user = identify_user
        self.identify_company = identify_company
        self.skip = skip
        self.get_metadata = get_metadata
        self.api_key_id = api_key_id
        self._api_key_secret = api_key_secret
        self.api_key_header = api_key_header
        self.anonymous_cookie = anonymous_cookie
        self.trusted_user_header = trusted_user_header
        self.trusted_company_header = trusted_company_header
        self.verify_jwt = verify_jwt
        self.jwt_user_claim = jwt_user_claim
        self.jwt_company_claim = jwt_company_claim
        self.event = event
        self.record_path = record_path
        # (identity, company) pairs already sent as a group message by this process
        self._grouped: dict[tuple[str, str, str], None] = {}

    # -- hooks ------------------------------------------------------------------------------

    def failed(self, name: str, exc: BaseException | None = None, result: Any = None) -> Any:
        self.stats.add("hook_errors")
        if exc is not None:
            log.warning(
                "identityres: the %s hook raised %r; the call is recorded without it", name, exc
            )
        else:  # (the type, not the value: it may be personal data)
            log.warning(
                "identityres: the %s hook returned a %s, which is not usable",
                name,
                result if isinstance(result, str) else type(result).__name__,
            )
        return FAILED

    def internal_error(self) -> None:
        """Recording a call failed in identityres itself: counted and logged with the
        traceback, never raised into the request."""
        self.stats.add("internal_errors")
        log.exception("identityres: recording a call failed; the call itself is unaffected")

    def call(self, name: str, hook: Hook, request: Any, response: Response | None) -> Any:
        """``hook(request, response)``; what it raised is counted and logged, never raised."""
        try:
            return hook(request, response)
        except Exception as exc:
            return self.failed(name, exc)

    # -- a call into messages --------------------------------------------------------------

    def credential(self, header: HeaderGetter) -> tuple[str | None, str | None]:
        """(bearer token, API key) of a request, read from ``Authorization: Bearer`` and the
        API key header."""
        bearer = None
        auth = header("authorization")
        if auth:
            scheme, _, token = auth.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
        key = header(self.api_key_header) if self.api_key_header else None
        return bearer, (key.strip() or None) if key else None

    def claims(self, bearer: str | None) -> Mapping[str, Any] | None:
        if self.verify_jwt is None or bearer is None or bearer.count(".") != 2:
            return None
        try:
            claims = self.verify_jwt(bearer)
        except Exception as exc:
            self.failed("verify_jwt", exc)
            return None
        if claims is None:
            return None
        if not isinstance(claims, Mapping):
            self.failed("verify_jwt", result=type(claims).__name__)
            return None
        return claims

    def messages(
        self,
        *,
        header: HeaderGetter,
        method: str,
        path: str,
        route: str | None,
        status: int,
        duration_ms: float,
        started: float,
        user: Any,
        company: Any,
        metadata: Any,
        key_id: Any,
    ) -> list[Message]:
        """The messages of one call; hook results are given (``FAILED`` for a failed hook)."""
        bearer, api_key = self.credential(header)
        claims = self.claims(bearer)

        user_id = None if user is FAILED or user is None else _identifier(user)
        if user_id is None and user is not None and user is not FAILED:
            self.failed("identify_user", result=type(user).__name__)
        if user_id is None and claims is not None:
            user_id = _identifier(claims.get(self.jwt_user_claim))
        if user_id is None and self.trusted_user_header:
            user_id = _identifier(header(self.trusted_user_header))

        company_id = None if company is FAILED or company is None else _identifier(company)
        if company_id is None and company is not None and company is not FAILED:
            self.failed("identify_company", result=type(company).__name__)
        if company_id is None and claims is not None and self.jwt_company_claim:
            company_id = _identifier(claims.get(self.jwt_company_claim))
        if company_id is None and self.trusted_company_header:
            company_id = _identifier(header(self.trusted_company_header))

        anonymous_id = (
            cookie_value(header("cookie"), self.anonymous_cookie) if self.anonymous_cookie else None
        )

        key: str | None = None
        if key_id is not None and key_id is not FAILED:
            key = _identifier(key_id)
            if key is None:
                self.failed("api_key_id", result=type(key_id).__name__)
        if key is None and self._api_key_secret is not None:
            credential = api_key or (bearer if claims is None else None)
            if credential is not None:
                key = api_key_identifier(self._api_key_secret, credential)

        properties: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(duration_ms, 3),
        }
        if self.record_path:
            properties["path"] = path
        if metadata is not None and metadata is not FAILED:
            if isinstance(metadata, Mapping) and _is_json(metadata):
                properties["metadata"] = dict(metadata)
            else:
                self.failed("get_metadata", result=type(metadata).__name__)

        if user_id is None and anonymous_id is None and key is None:
            self.stats.add("unidentified")
            return []
        timestamp = datetime.fromtimestamp(started, timezone.utc).isoformat()
        track = message(
            "track",
            event=self.event,
            userId=user_id,
            anonymousId=anonymous_id,
            identifiers=None if key is None else {"api_key": key},
            properties=properties,
        )
        track["timestamp"] = timestamp
        out = [track]
        if company_id is not None and (user_id is not None or anonymous_id is not None):
            who = ("user_id", user_id) if user_id is not None else ("anonymous_id", anonymous_id)
            pair = (who[0], str(who[1]), company_id)
            if pair not in self._grouped:
                if len(self._grouped) >= 10_000:
                    self._grouped.clear()
                self._grouped[pair] = None
                group = message(
                    "group",
                    groupId=company_id,
                    userId=user_id,
                    anonymousId=None if user_id is not None else anonymous_id,
                )
                group["timestamp"] = timestamp
                out.append(group)
        return out

    def send(self, messages: list[Message]) -> None:
        self.stats.add("calls")
        if not messages:
            return
        dropped = self.sink.stats.dropped
        try:
            self.sink.send(messages)
            self.stats.add("events", len(messages))
        except Exception:
            self.stats.add("send_errors")
            log.exception("identityres: the sink raised on send; %d messages lost", len(messages))
            self._regroup(messages)
            return
        if self.sink.stats.dropped > dropped:
            self._regroup(messages)

    def _regroup(self, messages: list[Message]) -> None:
        """Forget that the group messages among ``messages`` were sent (a full queue dropped
        them, or the sink raised): the next call of the pair sends its membership again."""
        for msg in messages:
            if msg.get("type") == "group":
                user_id, anonymous_id = msg.get("userId"), msg.get("anonymousId")
                who = (
                    ("user_id", user_id) if user_id is not None else ("anonymous_id", anonymous_id)
                )
                self._grouped.pop((who[0], str(who[1]), str(msg.get("groupId"))), None)

    def flush(self, timeout: float | None = None) -> bool:
        """Flush the sink (for tests, and before a graceful shutdown)."""
        return self.sink.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        self.sink.close(timeout)


def _is_json(value: Mapping[str, Any]) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def status_code(status: str) -> int:
    """The code of a WSGI status line (``"200 OK"``); 500 if it is not one."""
    code = status.split(" ", 1)[0]
    return int(code) if code.isdigit() and len(code) == 3 else 500


def headers_text(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
