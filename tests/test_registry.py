"""Choosing a store by URL (docs/storage.md): built-in schemes, third-party schemes from the
``identityres.stores`` entry-point group, and clear errors for anything else."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

import identityres as ir
from identityres.errors import ConfigurationError
from identityres.storage import ENTRY_POINT_GROUP, MemoryStore, _registry, store_from_url


def test_memory_url_gives_a_memory_store() -> None:
    assert isinstance(store_from_url("memory://"), MemoryStore)
    g = ir.IdentityGraph(store="memory://")
    g.identify("u1", "a1", timestamp=1)
    assert g.resolve(anonymous_id="a1") == "u1"


@pytest.mark.parametrize(
    "url",
    ["", "memory", "sqlite:/no-slashes.db", "nosuchscheme://x", "://x", "memory://host/path"],
)
def test_malformed_or_unknown_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ir.IdentityGraph(store=url)
    assert repr(url) in str(info.value)


def test_a_store_that_is_neither_a_url_nor_a_store_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        ir.IdentityGraph(store=42)


class ThirdPartyStore(MemoryStore):
    """Stands in for a store a third-party package registers."""

    opened_with: str | None = None

    @classmethod
    def from_url(cls, url: str) -> ThirdPartyStore:
        store = cls()
        store.opened_with = url
        return store


def test_third_party_schemes_come_from_the_entry_point_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ep = EntryPoint(
        name="toy",
        value=f"{__name__}:ThirdPartyStore.from_url",
        group=ENTRY_POINT_GROUP,
    )

    def entry_points(*, group: str) -> list[EntryPoint]:
        return [ep] if group == ENTRY_POINT_GROUP else []

    monkeypatch.setattr(_registry, "entry_points", entry_points)
    store: Any = store_from_url("toy://somewhere")
    assert isinstance(store, ThirdPartyStore)
    assert store.opened_with == "toy://somewhere"
    with pytest.raises(ConfigurationError, match="toy"):  # the message lists known schemes
        store_from_url("other://x")
