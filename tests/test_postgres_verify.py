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


def _found(base: str, namespace: str, secret: str) -> dict[str, int]:
    store = PostgresStore(base, namespace=namespace)
    try:
        return store.find_value(secret)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("secret", "kept_by_other", "expected", "said"),
    [
        # erased everywhere: verified, and what a query cannot see is named
        ("secret-pg-verify-5e1d", False, EXIT_OK, "verified: no live row of namespace"),
        # another profile's trait still holds it (a quote: escaped inside the JSON value,
        # and still found): not verified, the table named
        ('se"cret-pg-verify-77', True, EXIT_BAD_INPUT, "not verified: live rows"),
    ],
)
def test_forget_verify_checks_every_live_row_of_the_namespace(
    secret: str,
    kept_by_other: bool,
    expected: int,
    said: str,
    postgres_url: str,  # noqa: F811
    namespaces: Namespaces,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace = namespaces.new()
    _graph(postgres_url, namespace, secret, kept_by_other=kept_by_other)
    assert "nodes" in _found(postgres_url, namespace, secret)  # before: its node holds it
    code = main(["forget", secret, "--store", _url(postgres_url, namespace), "--verify"])
    out, err = capsys.readouterr()
    assert code == expected, err
    assert said in out
    after = _found(postgres_url, namespace, secret)
    if kept_by_other:
        assert after == {"traits": 1} and "traits (1)" in out
    else:
        assert after == {}
        assert "VACUUM" in out and "write-ahead log" in out


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
