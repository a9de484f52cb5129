"""Collects the Python code blocks of the Markdown docs as tests.

Sybil turns every ```python block in ``docs/**/*.md`` and the top-level ``README.md`` into a test
item; a block that raises (or a ``>>>`` example whose output differs) fails the run. Blocks in any
other language (```console, ```sh, ```json, ...) are left alone, and ``<!-- skip: next -->`` skips
the block after it. The blocks of one file share a namespace, top to bottom.

The unit and property tests live in ``tests/``, with their own ``tests/conftest.py``.
"""

from doctest import ELLIPSIS, NORMALIZE_WHITESPACE

from sybil import Sybil
from sybil.parsers.markdown import ClearNamespaceParser, PythonCodeBlockParser, SkipParser
from sybil.typing import Parser


def _parsers() -> list[Parser]:
    return [
        PythonCodeBlockParser(doctest_optionflags=ELLIPSIS | NORMALIZE_WHITESPACE),
        SkipParser(),
        ClearNamespaceParser(),
    ]


# Two roots, so that each file is parsed by exactly one Sybil: everything under docs/, and the
# README at the top only (a README.md in a sub-directory is not a project document).
_docs = Sybil(parsers=_parsers(), path="docs", patterns=["*.md"], name="docs")
_readme = Sybil(
    parsers=_parsers(), path=".", patterns=["README.md"], excludes=["*/README.md"], name="readme"
)

pytest_collect_file = (_docs + _readme).pytest()
