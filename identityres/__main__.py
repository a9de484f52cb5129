"""``python -m identityres``: the command line (see :mod:`identityres.cli`)."""

from identityres.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
