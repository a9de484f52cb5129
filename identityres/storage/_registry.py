"""Choosing a store by URL: ``memory://``, ``sqlite:///path.db``, ``sqlite:///:memory:``,
``postgresql://host/db?namespace=NAME`` (``postgres://`` too), and third-party schemes from
the ``identityres.stores`` entry-point group. Driver modules are imported only when their
scheme is used."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import urlsplit

from identityres.errors import ConfigurationError
from identityres.storage._protocol import Store

__all__ = ["ENTRY_POINT_GROUP", "store_from_url"]

ENTRY_POINT_GROUP = "identityres.stores"

# scheme -> "module:factory"; the factory takes the URL and returns a store
_BUILTIN = {
    "memory": "identityres.storage.memory:MemoryStore.from_url",
    "sqlite": "identityres.storage.sqlite:SQLiteStore.from_url",
    "postgresql": "identityres.storage.postgres:PostgresStore.from_url",
    "postgres": "identityres.storage.postgres:PostgresStore.from_url",
}


def _load(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def store_from_url(url: str, **options: Any) -> Store:
    """Open the store a URL names; ``options`` go to the store's ``from_url`` (e.g.
    ``timeout=``, ``retries=``, ``create=`` for SQLite, ``in_place=`` for memory) and win
    over the same options in the URL. Raises :class:`ConfigurationError` for a malformed
    URL (one holding a lone surrogate, too), an unknown scheme (naming the URL and the
    schemes known) or an unknown option."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"store={url!r}: not a store URL; expected e.g. 'memory://' or 'sqlite:///ids.db'"
        )
    try:
        # the URL must be text the system can use as a file name: a lone surrogate would
        # fail deep in a driver (UnicodeEncodeError); the surrogateescape'd bytes of an
        # undecodable POSIX file name (os.fsdecode) are fine
        os.fsencode(url)
    except UnicodeError as exc:
        raise ConfigurationError(
            f"store={url!r}: not valid text (a lone surrogate at {exc.start})"
            if isinstance(exc, UnicodeEncodeError)
            else f"store={url!r}: not valid text"
        ) from None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise ConfigurationError(f"store={url!r}: malformed URL: {exc}") from exc
    if not scheme:
        raise ConfigurationError(f"store={url!r}: the URL has no scheme")
    target = _BUILTIN.get(scheme)
    if target is not None:
        return _checked(url, _load(target)(url, **options))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name.lower() == scheme:
            factory = ep.load()
            return _checked(url, factory(url, **options))
    known = sorted({*_BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
    raise ConfigurationError(f"store={url!r}: unknown scheme {scheme!r}; known: {known}")


def _checked(url: str, store: Any) -> Store:
    if not isinstance(store, Store):
        raise ConfigurationError(
            f"store={url!r}: its factory returned {store!r}, which does not implement "
            "identityres.storage.Store"
        )
    return store
