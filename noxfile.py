"""Developer task sessions: ``nox -s tests|typing|lint|docs|bench``.

CI does not go through nox: ``.ci/run`` runs the README's test command directly. These sessions are
the same checks, one at a time, in throwaway environments.
"""

from pathlib import Path

import nox

nox.options.sessions = ["tests", "typing", "lint", "docs"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent


def _existing(*paths: str) -> list[str]:
    return [path for path in paths if (ROOT / path).exists()]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole test suite: tests/, plus the code blocks of docs/ and README.md."""
    session.install(".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def typing(session: nox.Session) -> None:
    """Type-check the package, and the typed usage examples in typing_tests/ if there are any."""
    session.install(".[typing]")
    session.run("mypy", "--strict", *_existing("identityres", "typing_tests"))


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and check formatting."""
    session.install(".[lint]")
    paths = _existing("identityres", "tests", "benchmarks", "conftest.py", "noxfile.py")
    session.run("ruff", "check", "--no-fix", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def docs(session: nox.Session) -> None:
    """Run the Python code blocks of docs/*.md and README.md (collected by Sybil)."""
    session.install(".[docs]")
    session.run("pytest", "docs", "README.md", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks in their quick mode."""
    session.install(".[bench]")
    session.run("python", "benchmarks/run.py", "--quick", *session.posargs)
