"""Server-backed stores (PostgreSQL, Redis, ...): where the conformance tests find their
server, and what happens when there is none (:func:`server_url`).

The rule: a store whose server is not configured is not tested, and says so (a skip naming
the environment variable to set); a store whose server is configured but broken fails (a
misconfigured CI job must not pass by skipping everything).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

__all__ = ["server_url"]

#: the password of a URL's ``user:password@`` part, hidden in failure messages
_PASSWORD = re.compile(r"(?P<head>^[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@]*:)[^/?#]*(?=@)")


def _redacted(url: str) -> str:
    return _PASSWORD.sub(r"\g<head>***", url, count=1)


def server_url(
    variable: str,
    *,
    check: Callable[[str], object] | None = None,
    what: str | None = None,
) -> str:
    """The URL of the server a store's conformance tests run against, from the environment
    variable ``variable``.

    * ``variable`` unset or empty: the calling test (or fixture) is skipped, with a reason
      naming the variable, e.g. ``IDENTITYRES_POSTGRES_URL is not set: the PostgreSQL
      conformance tests need a server; set it to run them`` (``what`` names the server:
      ``"PostgreSQL"``; without it the reason says "these conformance tests").
    * ``variable`` set: ``check(url)``, when given, should reach the server (connect, ping)
      and raise when it cannot; then the test *fails* (``pytest.fail``), naming the variable,
      the URL (its password hidden) and the error: a configured server that does not answer
      is a broken setup, never a reason to skip.

    Returns the URL, as set. Call it from a fixture, so that the check runs once::

        import psycopg
        import pytest

        from identityres.testing import StoreConformance, server_url


        @pytest.fixture(scope="session")
        def postgres_url() -> str:
            return server_url(
                "IDENTITYRES_POSTGRES_URL",
                check=lambda url: psycopg.connect(url).close(),
                what="PostgreSQL",
            )


        class TestPostgresStore(StoreConformance):
            @pytest.fixture(autouse=True)
            def _server(self, postgres_url: str) -> None:
                self.url = postgres_url

            def make_store(self, tmp_path):
                return PostgresStore(self.url, schema=f"conformance_{tmp_path.name}")

            def reopen(self, store, tmp_path):
                return PostgresStore(self.url, schema=f"conformance_{tmp_path.name}")

    pytest is imported only when needed (to skip or fail).
    """
    url = os.environ.get(variable, "")
    if not url.strip():
        import pytest  # only here: the kit's other parts work without pytest

        tests = f"the {what} conformance tests" if what else "these conformance tests"
        pytest.skip(f"{variable} is not set: {tests} need a server; set it to run them")
    if check is not None:
        try:
            check(url)
        except Exception as exc:
            import pytest

            server = f"the {what} server" if what else "the server"
            pytest.fail(
                f"{variable} is set to {_redacted(url)!r}, but {server} does not answer: "
                f"{type(exc).__name__}: {exc}",
                pytrace=False,
            )
    return url
