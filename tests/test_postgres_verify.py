"""``identityres forget --verify`` on PostgreSQL (``PostgresStore.find_value``), against the real
server (``IDENTITYRES_POSTGRES_URL``; see ``tests/test_postgres.py``): after an erasure no live
row of the namespace holds the value; a value that another profile still holds (a trait, in
JSON) is found and reported; the check stays inside its own namespace.
"""

from __future__ import annotations

import pytest

from identityres import Identify, IdentityGraph
from identityres.cli import EXIT_BAD_INPUT, EXIT_OK, main

pytest.importorskip("psycopg", reason="the PostgreSQL tests need identityres[postgres]")

from identityres.storage.postgres import PostgresStore
from tests.test_postgres import Namespaces, namespaces, postgres_url  # noqa: F401


def _url(base: str, namespace: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}namespace={namespace}"


def _graph(base: str, namespace: str, secret: str, *, kept_by_other: bool) -> None:
    with IdentityGraph(store=PostgresStore(base, namespace=namespace)) as graph:
        graph.ingest(
            [
                Identify(user_id=f"user-{i:03d}", anonymous_id=f"anon-{i:03d}", timestamp=i)
                for i in range(50)
            ]
        )
        graph.identify(secret, "anon-secret", traits={"plan": "pro"}, timestamp=100)
        if kept_by_other:
            # another profile's trait holds the value: forgetting the identifier does not
            # erase it, and --verify must say so
            graph.identify("user-other", traits={"referrer": secret}, timestamp=101)


def test_forget_verify_finds_no_live_row_after_an_erasure(
    postgres_url: str,  # noqa: F811
    namespaces: Namespaces,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace = namespaces.new()
    secret = "secret-pg-verify-5e1d"
    _graph(postgres_url, namespace, secret, kept_by_other=False)
    store = PostgresStore(postgres_url, namespace=namespace)
    try:
        found = store.find_value(secret)
        assert "nodes" in found  # before: its node holds it
    finally:
        store.close()
    code = main(["forget", secret, "--store", _url(postgres_url, namespace), "--verify"])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert "verified: no live row of namespace" in out
    assert "VACUUM" in out and "write-ahead log" in out  # what it cannot check, said
    store = PostgresStore(postgres_url, namespace=namespace)
    try:
        assert store.find_value(secret) == {}
    finally:
        store.close()


def test_forget_verify_reports_a_value_another_profile_keeps(
    postgres_url: str,  # noqa: F811
    namespaces: Namespaces,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace = namespaces.new()
    # a quote: inside the JSON of the trait value it is escaped, and still found
    secret = 'se"cret-pg-verify-77'
    _graph(postgres_url, namespace, secret, kept_by_other=True)
    code = main(["forget", secret, "--store", _url(postgres_url, namespace), "--verify"])
    out, _ = capsys.readouterr()
    assert code == EXIT_BAD_INPUT
    assert "not verified" in out and "traits (1)" in out


def test_find_value_stays_in_its_namespace_and_checks_its_input(
    postgres_url: str,  # noqa: F811
    namespaces: Namespaces,  # noqa: F811
) -> None:
    first, second = namespaces.new(), namespaces.new()
    _graph(postgres_url, first, "only-in-the-first-9c2", kept_by_other=False)
    store = PostgresStore(postgres_url, namespace=second)
    try:
        assert store.find_value("only-in-the-first-9c2") == {}
        assert store.find_value("") == {} and store.find_value("a\x00b") == {}
        with pytest.raises(TypeError, match="value="):
            store.find_value(b"bytes")  # type: ignore[arg-type]
    finally:
        store.close()
