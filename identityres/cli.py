"""The ``identityres`` command line: resolve a file of Segment-spec messages into profiles, and
the operator's tools (docs/operator-tools.md).

::

    identityres resolve EVENTS.jsonl [--output PROFILES.jsonl] [--on-error raise|skip]
                                     [--max-errors N] [--format FORMAT] [--rules RULES.toml]
                                     [--store URL] [--quiet] [--json] [--top N]
    identityres profile ID    (--store URL | --input EVENTS.jsonl) [--json]
    identityres explain A B   (--store URL | --input EVENTS.jsonl) [--json]
    identityres history ID    (--store URL | --input EVENTS.jsonl) [--json]
    identityres export --format graphml|dot|mermaid|jsonl [--profile ID] [-o FILE]
                              (--store URL | --input EVENTS.jsonl)
    identityres forget ID --store URL [--timestamp WHEN] [--event-id EVENT_ID] [--verify]
    identityres serve --store URL [--host 127.0.0.1] [--port 8080] [--write-key-file FILE]
    identityres funnel EVENTS.jsonl --step NAME ... --within 7d [--by KEY] [--store URL]
    identityres users EVENTS.jsonl [--by day|week|company|PROPERTY] [--store URL]
    identityres journey ID (--store URL | --input EVENTS.jsonl)

``serve`` runs the collector (docs/integrations.md): Segment's HTTP API, written to the store.
It needs the ``identityres[serve]`` extra (uvicorn) and at least one write key, read from
``--write-key-file`` (one key a line) or the ``IDENTITYRES_WRITE_KEYS`` environment variable
(comma-separated), never from the command line, where other users could read it.

The analytics commands (``funnel``, ``users``, ``journey``; docs/analytics.md) also take
``--json`` and ``--plot FILE`` (PNG or SVG, needs ``identityres[plot]``).

The operator commands read a store (``--store sqlite:///ids.db``) or a JSONL file of messages
applied to an in-memory graph first (``--input``, as ``resolve`` reads it; ``--on-error`` as
there). ``ID`` is ``kind:value`` (``anonymous_id:abc``, ``email:a@b.c``) or a bare value, meaning
a ``user_id`` (``user_id:VALUE`` for a user id holding ``:`` after a kind-like word). ``forget``
changes the graph, so it needs ``--store``. They exit with ``0``, ``1`` and ``2`` as ``resolve``
does (a store that cannot be opened or read is bad input), and with ``3`` when an identifier is
not in the graph (``explain``: when the two are not one person; the answer is printed).

``resolve``:

``EVENTS.jsonl`` holds one message or batch body per line, of the format ``--format`` names
(default ``auto``: each line's own; docs/formats.md): Segment-spec messages (``identify``,
``track``, ``page``, ``screen``, ``alias``, ``group`` and the identityres extension
``{"type": "reset", ...}``), PostHog, Mixpanel, Amplitude or Moesif ones; see
:meth:`identityres.IdentityGraph.ingest`. Blank lines are ignored, ``-`` reads standard input
and gzip input is read decompressed. The messages are applied to an in-memory
:class:`identityres.IdentityGraph` (``--store``: to that store, created or extended; ``--rules``:
with the rules of that TOML file) in the order of the file, the way a live consumer receives
them: a message that links identifiers (or a reset) and arrives after newer messages of its part
of the graph is counted as *late* and handled by replaying that part; the resulting profiles are
the same in any order (R8 in docs/merge-rules.md). A store is written in batches of lines (one
transaction each), and a batch is applied in time order, so *late* counts only messages older
than earlier batches; in ``raise`` mode the batches before a bad line's are kept.

The command prints a summary for a person to read (``--json``: the same summary as one JSON
object): events read, applied, duplicates, late and skipped; identifiers by kind; profiles,
identified and anonymous; accepted joins; refusals by reason code; blocked values with how many
times each was seen; companies; and the largest profiles. ``--output`` writes one JSON object per
profile, in canonical order (:meth:`identityres.IdentityGraph.profiles`).

Bad input. A line that is not valid JSON, is not a JSON object, or is an event the library
rejects (:class:`identityres.errors.ValidationError`) is reported with its line number. With
``--on-error raise`` (the default) the first such line stops the command: the problem goes to
standard error, no summary is printed and no output file is written. With ``--on-error skip``
the line is skipped and counted in the summary, and standard error reports the skipped lines
grouped by reason; ``--max-errors N`` stops after more than ``N`` of them (exit status ``2``),
and a run in which no line could be applied exits with ``2`` too. On a terminal a progress bar
(the ``cli`` extra, tqdm) shows on standard error unless ``--quiet``.

Exit status: ``0`` success (also when ``--on-error skip`` skipped lines); ``1`` command-line
usage error (unknown option, missing argument); ``2`` bad input: the events file cannot be read,
a bad line in ``raise`` mode, or the output (``--output`` file or standard output) cannot be
written.

Output. ``-o``/``--output`` (of ``resolve`` and ``export``) is checked before any work: a path
that names the events file or the store's database (or its ``-wal``, ``-shm``, ``-journal``
file), under any name, is refused, and so is one that cannot be written (its directory does not
exist or is not writable, it is a directory); both are bad input (``2``). Text for people shows
every value that does not print as is (control characters, bidirectional overrides, lone
surrogates) escaped, as its Python ``repr``; JSON (``--json``, ``--output``, ``export --format
jsonl``) and GraphML are written in ASCII, with escapes for every other character. Data in a
store that cannot be read (a damaged row) is reported on one line, with status ``2``; the
``--debug`` option (before or after the command) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib
import io
import json
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, NoReturn

from identityres import export
from identityres._events import parse_iso_timestamp
from identityres._explain import Decision, Step, iso, show_identifier, show_text
from identityres._formats import FORMATS, detect, envelope
from identityres._graph import IdentityGraph, IngestReport
from identityres._model import USER_ID, Identifier, Profile
from identityres._rules import Rules, _import_normalizer
from identityres.errors import ConfigurationError, IdentityResError, ValidationError
from identityres.storage import store_from_url
from identityres.storage.memory import MemoryStore

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
    "profile_to_json",
]

#: Exit status: success.
EXIT_OK = 0
#: Exit status: command-line usage error.
EXIT_USAGE = 1
#: Exit status: bad input (unreadable file, bad line in ``raise`` mode, unwritable output).
EXIT_BAD_INPUT = 2
#: Exit status of the operator commands: the identifier is not in the graph (``explain``:
#: the two identifiers are not one person).
EXIT_NOT_FOUND = 3

PROG = "identityres"

#: How many items of each list the text summary shows (``--json`` shows them all).
_TEXT_LIMIT = 10
#: How many line numbers of one reason the report of skipped lines shows.
_LINES_SHOWN = 5
#: Lines per batch written to a store by ``resolve --store``.
_CHUNK = 2000


class _UsageExit(Exception):
    """Raised by the parser instead of exiting the process, so ``main`` can return a code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors exit with status 1 (argparse's own is 2, which
    this command keeps for bad input) and which never calls ``sys.exit`` itself."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        # (argparse quotes some arguments with repr, and others, unrecognized ones, as given)
        _write_err(f"{self.prog}: error: {_printable(message, one_line=True)}\n")
        raise _UsageExit(EXIT_USAGE)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _UsageExit(status)


class _BadInput(Exception):
    """Input the command cannot use; the message is ready for standard error."""


# -- writing text: every value a person reads is escaped -------------------------------------
#
# Values (identifiers, canonical ids, company ids and names, event ids, file names, store
# URLs) go through ``show_text`` where a message is built; ``_printable`` is the last guard
# of whatever the command writes as text, and ``_dumps`` writes JSON in ASCII.


def _printable(text: str, *, one_line: bool = False) -> str:
    """``text`` with each line that does not print (a control character, a bidirectional
    override, a lone surrogate: a value that was not escaped) shown by ``show_text``;
    ``one_line``: the whole text as one line (an error message)."""
    if text.isprintable():
        return text
    if one_line:
        return show_text(text)
    return "\n".join(x if x.isprintable() else show_text(x) for x in text.split("\n"))


def _dumps(value: Any, *, indent: int | None = None) -> str:
    """JSON text in ASCII: every other character as a ``\\uXXXX`` escape, so that no control
    character or bidirectional override is written raw and a lone surrogate (which UTF-8
    cannot encode) is written at all; a JSON reader gets the same values back."""
    return json.dumps(value, indent=indent, ensure_ascii=True)


def _write_out(text: str) -> None:
    """Write ``text`` to standard output; one that cannot encode it is bad output."""
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError as exc:
        encoding = getattr(sys.stdout, "encoding", None) or "?"
        raise _BadInput(
            f"cannot write to standard output: its encoding {show_text(encoding)} cannot show "
            f"{exc.object[exc.start : exc.end]!r} (set PYTHONIOENCODING=utf-8)"
        ) from None


def _write_err(text: str) -> None:
    """Write a message to standard error, with backslash escapes for what it cannot encode."""
    try:
        sys.stderr.write(text)
    except UnicodeEncodeError:
        sys.stderr.write(text.encode("ascii", "backslashreplace").decode("ascii"))


class _LineError:
    """One line of the events file that was skipped; ``reason`` groups it with the others
    skipped for the same reason."""

    __slots__ = ("line", "problem", "reason")

    def __init__(self, line: int, problem: str, reason: str | None = None) -> None:
        self.line = line
        self.problem = problem
        self.reason = problem if reason is None else reason


# -- reading the events file ---------------------------------------------------------------


def _open_events(path: str) -> BinaryIO:
    """The events file (``-``: standard input); a gzip file (by its magic bytes) is read
    decompressed."""
    if path == "-":
        stdin = sys.stdin.buffer
        peek = getattr(stdin, "peek", None)
        if peek is not None and peek(2)[:2] == b"\x1f\x8b":
            return gzip.GzipFile(fileobj=stdin, mode="rb")  # type: ignore[return-value]
        return stdin
    try:
        raw = open(path, "rb")  # noqa: SIM115 (the caller closes it)
    except OSError as exc:
        raise _BadInput(f"cannot read {show_text(path)}: {exc.strerror or exc}") from None
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _parse_line(raw: bytes, lineno: int) -> dict[str, Any] | str:
    """The message on one line, or a description of what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start + 1})"
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return "invalid JSON: nested too deeply"
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return {"batch": value}  # a batch body some clients post (Mixpanel's /import)
    if not isinstance(value, dict):
        return f"expected a JSON object (one message or a batch body), got {_json_type(value)}"
    return value


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null"


def _problem(
    msg: dict[str, Any], field: str, value: Any, reason: str, line_of_event: dict[str, int]
) -> str:
    """A validation error of one message, as ``field=value: reason``."""
    if field == "timestamp" and isinstance(value, datetime) and isinstance(msg, dict):
        # The library parsed the ISO-8601 text before rejecting it: show what the line says.
        value = msg.get("timestamp", msg.get("originalTimestamp", value))
    problem = f"{field}={_short(value)}: {reason}"
    if field == "messageId" and isinstance(value, str) and value in line_of_event:
        problem += f" (line {line_of_event[value]})"
    return problem


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


# -- the resolve command -------------------------------------------------------------------


def profile_to_json(profile: Profile) -> dict[str, Any]:
    """A profile as the JSON object ``--output`` writes: identifier values as sorted lists,
    traits by sorted key, ``first_seen``/``last_seen`` as ISO-8601 UTC (``...Z``)."""
    return {
        "user_id": profile.user_id,
        "user_id_kind": profile.user_id_kind,
        "identified_user_id": profile.identified_user_id,
        "identifiers": {k: sorted(v) for k, v in sorted(profile.identifiers.items())},
        "anonymous_ids": sorted(profile.anonymous_ids),
        "company_id": profile.company_id,
        "company_ids": sorted(profile.company_ids),
        "traits": {k: profile.traits[k] for k in sorted(profile.traits)},
        "first_seen": iso(profile.first_seen),
        "last_seen": iso(profile.last_seen),
    }


@contextlib.contextmanager
def _replacing(path: str, binary: bool = False) -> Iterator[IO[Any]]:
    """A file to write ``path`` through: a temporary file renamed into place on success and
    removed on any failure, so that a failed run leaves no partial file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        if binary:
            with open(tmp, "xb") as f:
                yield f
        else:
            with open(tmp, "x", encoding="utf-8", newline="\n") as f:
                yield f
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _BadInput(f"cannot write {show_text(path)}: {exc.strerror or exc}") from None
        raise


def _check_output(path: str, inputs: Sequence[tuple[str, str]]) -> None:
    """Before any work: refuse an output ``path`` that is one of ``inputs`` (``(what, path)``
    pairs: the events file, the store's database file and its ``-wal``/``-shm``/``-journal``
    files), under any name (a relative path, a symlink, a hard link), and fail when the file
    cannot be written (its directory does not exist or is not writable, it is a directory)."""
    shown = show_text(path)
    real = os.path.realpath(path)
    for what, other in inputs:
        same = real == os.path.realpath(other)
        if not same:
            with contextlib.suppress(OSError):
                same = os.path.samefile(path, other)
        if same:
            raise _BadInput(f"refusing to overwrite {what} {show_text(other)} with -o {shown}")
    if os.path.isdir(path):
        raise _BadInput(f"cannot write {shown}: it is a directory")
    # The file is written through a temporary file in its directory (``_replacing``): try one.
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, probe = tempfile.mkstemp(prefix=".identityres-", suffix=".tmp", dir=directory)
    except FileNotFoundError:
        raise _BadInput(
            f"cannot write {shown}: the directory {show_text(directory)} does not exist"
        ) from None
    except OSError as exc:
        raise _BadInput(f"cannot write {shown}: {exc.strerror or exc}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _store_files(url: str) -> list[tuple[str, str]]:
    """The files of an SQLite store URL (``sqlite:///ids.db``: the database and the files
    SQLite keeps beside it), as ``_check_output`` takes them; none for other stores."""
    scheme, _, rest = url.partition("://")
    path = rest[1:].partition("?")[0] if rest.startswith("/") else ""
    if scheme.lower() != "sqlite" or not path or path == ":memory:":
        return []
    files = [("the store's database file", path)]
    # SQLite names them after the path as given, or after the file a symlink points to
    for base in dict.fromkeys((path, os.path.realpath(path))):
        files.extend(("the store's file", base + suffix) for suffix in ("-wal", "-shm", "-journal"))
    return files


def _write_profiles(path: str, profiles: list[Profile]) -> None:
    """Write ``profiles`` as JSONL (see :func:`_replacing`)."""
    with _replacing(path) as f:
        for p in profiles:
            f.write(_dumps(profile_to_json(p)))
            f.write("\n")


class _Run:
    """What one ``resolve`` run has seen so far, line by line."""

    def __init__(
        self,
        label: str,
        skip: bool,
        fmt: str = "auto",
        graph: IdentityGraph | None = None,
        max_errors: int | None = None,
    ) -> None:
        self.label = label
        self.skip = skip
        self.format = fmt
        self.graph = IdentityGraph() if graph is None else graph
        self.max_errors = max_errors
        #: lines per ``ingest`` call: 1 in memory (file order, late events as a consumer
        #: sees them), a batch of them for a store
        self.chunk = 0 if graph is None or isinstance(graph.store, MemoryStore) else _CHUNK
        self.pending: list[tuple[int, Any]] = []
        #: the store URL written to, or ``None`` (in memory)
        self.store: str | None = None
        #: the format of each line read, as detected (``batch`` bodies by their first message)
        self.formats: Counter[str] = Counter()
        self.read = 0
        self.applied = 0
        self.duplicates = 0
        self.late = 0
        self.skipped: list[_LineError] = []
        #: event_id -> the line that first applied it (refusals and duplicates name lines)
        self.line_of_event: dict[str, int] = {}
        #: (line, line it repeats)
        self.duplicate_lines: list[tuple[int, int]] = []
        #: (kind, value, reason) -> times seen
        self.blocked: Counter[tuple[str, str, str]] = Counter()

    def line(self, lineno: int, raw: bytes) -> None:
        """Parse and apply one non-blank line."""
        self.read += 1
        msg = _parse_line(raw, lineno)
        if isinstance(msg, str):
            self._bad(lineno, msg, msg.split(":")[0].split(" (")[0])
            return
        inner = envelope(msg)
        first = inner[0] if inner else msg
        self.formats[(detect(first) if isinstance(first, dict) else None) or "unknown"] += 1
        if self.chunk:
            # A store writes a batch per ``ingest`` call (a transaction, made durable): a
            # call per line would be a hundred lines a second on SQLite.
            self.pending.append((lineno, msg))
            if len(self.pending) >= self.chunk:
                self.flush()
            return
        # One message per ``ingest`` call: the messages are applied in file order, so a
        # message older than what its part of the graph has seen is handled as a late one.
        report = self.graph.ingest([msg], on_error="skip", format=self.format)
        self._report([(lineno, msg)], report)

    def flush(self) -> None:
        """Apply the lines buffered for a store, as one batch."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        messages = [m for _, m in pending]
        if self.skip:
            self._report(pending, self.graph.ingest(messages, on_error="skip", format=self.format))
            return
        try:  # raise mode: nothing of a batch with a bad line is written
            report = self.graph.ingest(messages, format=self.format)
        except ValidationError as err:
            lineno, msg = pending[err.index or 0]
            problem = _problem(msg, err.field, err.value, err.reason, self.line_of_event)
            self._bad(lineno, problem, f"{err.field}: {err.reason}")
            raise  # (``_bad`` raises in raise mode)
        self._report(pending, report)

    def _report(self, lines: list[tuple[int, Any]], report: IngestReport) -> None:
        for err in report.errors:
            lineno, msg = lines[err.index or 0]
            problem = _problem(msg, err.field, err.value, err.reason, self.line_of_event)
            self._bad(lineno, problem, f"{err.field}: {err.reason}")
        for index, outcome in zip(report.indexes, report.outcomes, strict=True):
            lineno = lines[index][0]
            if outcome.duplicate:
                self.duplicates += 1
                first = self.line_of_event.get(outcome.event_id, 0)
                self.duplicate_lines.append((lineno, first))
                continue
            self.applied += 1
            self.line_of_event.setdefault(outcome.event_id, lineno)
            if outcome.late:
                self.late += 1
            for b in outcome.blocked:
                self.blocked[(b.kind, b.value, b.reason.value)] += 1

    def _bad(self, lineno: int, problem: str, reason: str) -> None:
        where = f"{show_text(self.label)}, line {lineno}: {_printable(problem, one_line=True)}"
        if not self.skip:
            raise _BadInput(where)
        self.skipped.append(_LineError(lineno, problem, reason))
        if self.max_errors is not None and len(self.skipped) > self.max_errors:
            _write_err(self.skipped_report())
            raise _BadInput(
                f"{show_text(self.label)}: more than {_plural(self.max_errors, 'bad line')} "
                f"(--max-errors); stopped at line {lineno}"
            )

    def skipped_groups(self) -> list[tuple[str, list[int]]]:
        """The skipped lines by reason, the most frequent first: (reason, line numbers)."""
        groups: dict[str, list[int]] = {}
        for e in self.skipped:
            groups.setdefault(e.reason, []).append(e.line)
        return sorted(groups.items(), key=lambda item: (-len(item[1]), item[1][0]))

    def skipped_report(self) -> str:
        """What standard error says of the skipped lines: one line per reason, with the first
        few line numbers (not a line per bad line: a file of the wrong format is all bad)."""
        out = []
        for reason, lines in self.skipped_groups():
            shown = ", ".join(map(str, lines[:_LINES_SHOWN]))
            more = f", ... ({len(lines) - _LINES_SHOWN} more)" if len(lines) > _LINES_SHOWN else ""
            out.append(
                f"{PROG}: skipped {_plural(len(lines), 'line')} of {show_text(self.label)}: "
                f"{_printable(reason, one_line=True)} (line{'s' if len(lines) > 1 else ''} "
                f"{shown}{more})\n"
            )
        return "".join(out)


def _read_file(
    path: str,
    *,
    skip: bool,
    fmt: str = "auto",
    graph: IdentityGraph | None = None,
    max_errors: int | None = None,
    progress: bool = False,
) -> _Run:
    """Apply the messages of an events file (``-``: standard input; gzip files decompressed)
    to ``graph`` (a new in-memory graph by default), line by line."""
    label = "<stdin>" if path == "-" else path
    run = _Run(label, skip=skip, fmt=fmt, graph=graph, max_errors=max_errors)
    events = _open_events(path)
    bar = _progress_bar(path) if progress else None
    try:
        # Binary lines end at b"\n" only: a U+2028 inside a JSON string does not split a line.
        for lineno, raw in enumerate(events, 1):
            if raw.strip():
                run.line(lineno, raw)
            if bar is not None:
                bar.update(len(raw))
                if lineno % 1000 == 0:
                    bar.set_postfix_str(f"{run.read} events", refresh=False)
        run.flush()
    except OSError as exc:
        raise _BadInput(f"cannot read {show_text(label)}: {exc.strerror or exc}") from None
    finally:
        if bar is not None:
            bar.close()
        if events is not sys.stdin.buffer:
            events.close()
    if run.skipped:
        _write_err(run.skipped_report())
    return run


def _progress_bar(path: str, stream: Any = None) -> Any:
    """A progress bar on standard error (bytes of the file read, events in the postfix, the
    rate and the time left) when it is a terminal and the ``progress`` extra (tqdm) is
    installed; ``None`` otherwise: nothing extra when piped."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return None
    try:
        tqdm = importlib.import_module("tqdm").tqdm  # the ``progress`` extra, kept optional
    except ImportError:
        return None
    total = None
    if path != "-":
        with contextlib.suppress(OSError):
            total = os.path.getsize(path)
            if total and path.endswith(".gz"):
                total = None  # (the bytes read are the decompressed ones)
    return tqdm(total=total, unit="B", unit_scale=True, file=stream, desc="reading", leave=False)


#: ``--engine auto`` resolves a JSONL file at least this large with the batch engine
AUTO_BATCH_BYTES = 64 * 1024 * 1024


def _engine_for(args: argparse.Namespace) -> str:
    """``online`` or ``batch``: what ``--engine`` asks for (auto: batch for Parquet, a
    directory, or a file of at least ``AUTO_BATCH_BYTES``, when the batch extra is there)."""
    engine: str = args.engine
    # what only the online reader does today (docs/batch.md, "Gaps")
    online_only = [
        option
        for option, given in (
            ("--store", args.store is not None),
            ("--rules", args.rules is not None),
            ("--format", args.format not in ("auto", "segment")),
            ("--max-errors", args.max_errors is not None),
        )
        if given
    ]
    if engine != "auto":
        if engine == "batch" and args.events == "-":
            raise _Usage("--engine batch reads a file or directory, not standard input")
        if engine == "batch" and online_only:
            raise _Usage(f"--engine batch cannot be combined with {', '.join(online_only)} yet")
        return engine
    if args.events == "-" or online_only:
        return "online"
    try:
        import identityres.batch  # noqa: F401
    except ImportError:
        return "online"
    path = Path(args.events)
    name = path.name.lower()
    if path.is_dir() or name.endswith((".parquet", ".pq")):
        return "batch"
    try:
        return "batch" if path.stat().st_size >= AUTO_BATCH_BYTES else "online"
    except OSError:
        return "online"  # (the online reader reports the unreadable file)


def _resolve_batch(args: argparse.Namespace) -> int:
    """``resolve --engine batch``: ``identityres.batch`` (docs/batch.md); the summary is of the
    tables, ``--tables`` writes them, ``-o`` the profiles as the online engine does."""
    try:
        from identityres import batch
    except ImportError as exc:
        raise _Usage(str(exc)) from None

    def progress(phase: str, seconds: float) -> None:
        if not args.json or sys.stderr.isatty():
            _write_err(f"{PROG} resolve: {phase:<10} done in {seconds:8.2f} s\n")

    try:
        result = batch.resolve(args.events, on_error=args.on_error, progress=progress)
    except ValidationError as exc:
        raise _BadInput(f"{show_text(args.events)}: {exc}") from None
    except (ConfigurationError, OSError) as exc:
        raise _BadInput(f"{show_text(args.events)}: {exc}") from None
    if args.tables is not None:
        result.write(args.tables, format=args.tables_format)
    if args.output is not None:
        graph = result.graph()
        kind_index = graph.rules.compiled.kind_index
        profiles = sorted(graph.profiles(), key=lambda p: (kind_index[p.user_id_kind], p.user_id))
        _write_profiles(args.output, profiles)
    refusals = Counter(result.refusals.column("reason").to_pylist())
    kinds = Counter(result.identity_map.column("kind").to_pylist())
    identified = sum(1 for v in result.profiles.column("identified_user_id").to_pylist() if v)
    summary = {
        "input": args.events,
        "engine": "batch",
        "events": {
            "applied": int(result.stat("events")),
            "duplicates": int(result.stat("duplicates")),
            "skipped": len(result.errors),
        },
        "skipped_events": [
            {"index": e.index, "field": e.field, "problem": e.reason} for e in result.errors
        ],
        "identifiers": {
            "total": result.identity_map.num_rows,
            "by_kind": {k: kinds[k] for k in result.rules.all_kinds if kinds[k]},
        },
        "profiles": {
            "total": result.profiles.num_rows,
            "identified": identified,
            "anonymous": result.profiles.num_rows - identified,
        },
        "refusals": {
            "total": result.refusals.num_rows,
            "by_reason": dict(sorted(refusals.items())),
        },
        "conflicted_events_fraction": result.stat("conflicted_fraction"),
        "seconds": {k: round(v, 3) for k, v in result.times.items()},
        "tables": args.tables,
        "output": args.output,
    }
    if args.json:
        _write_out(_dumps(summary, indent=2) + "\n")
    else:
        lines = [
            f"{summary['input']} (batch engine)",
            f"events: {summary['events']['applied']} applied, "
            f"{summary['events']['duplicates']} duplicates, {len(result.errors)} skipped",
            f"identifiers: {result.identity_map.num_rows}",
            f"profiles: {result.profiles.num_rows} ({identified} identified)",
            f"refusals: {result.refusals.num_rows}",
            f"conflicted events: {100 * result.stat('conflicted_fraction'):.1f}%",
        ]
        lines.extend(f"  skipped event {e.index}: {e.field}: {e.reason}" for e in result.errors)
        _write_out(_printable("\n".join(lines) + "\n"))
    return EXIT_OK


def _resolve(args: argparse.Namespace) -> int:
    if args.output is not None:
        inputs = [] if args.events == "-" else [("the events file", args.events)]
        _check_output(
            args.output, inputs + ([] if args.store is None else _store_files(args.store))
        )
    if _engine_for(args) == "batch":
        return _resolve_batch(args)
    if args.tables is not None:
        raise _Usage("--tables needs the batch engine (--engine batch)")
    rules = None if args.rules is None else _rules_file(args.rules)
    graph = None if args.store is None else _store_graph(args.store, rules, create=True)
    if graph is None and rules is not None:
        graph = IdentityGraph(rules)
    try:
        run = _read_file(
            args.events,
            skip=args.on_error == "skip",
            fmt=args.format,
            graph=graph,
            max_errors=args.max_errors,
            progress=not args.quiet,
        )
        return _resolved(args, run)
    finally:
        if graph is not None:
            graph.close()


def _resolved(args: argparse.Namespace, run: _Run) -> int:
    run.store = args.store

    # the documented order of the output: by the priority of the canonical id's kind, then id
    kind_index = run.graph.rules.compiled.kind_index
    profiles = sorted(run.graph.profiles(), key=lambda p: (kind_index[p.user_id_kind], p.user_id))
    if args.output is not None:
        _write_profiles(args.output, profiles)
    summary = _summary(run, profiles, top=args.top, output=args.output)
    if args.json:
        _write_out(_dumps(summary, indent=2) + "\n")
    else:
        text = io.StringIO()
        _print_text(summary, text)
        _write_out(_printable(text.getvalue()))
    if run.read and run.applied + run.duplicates == 0:
        _write_err(f"{PROG}: error: no line of {show_text(run.label)} could be applied\n")
        return EXIT_BAD_INPUT
    return EXIT_OK


def _summary(run: _Run, profiles: list[Profile], *, top: int, output: str | None) -> dict[str, Any]:
    """Everything the command reports, as plain JSON data (the text form renders this)."""
    graph = run.graph
    stats = graph.stats(top=0)  # the counts; the largest profiles are shown in full below
    kinds = graph.rules.all_kinds
    by_kind: Counter[str] = Counter()
    for p in profiles:
        for kind, values in p.identifiers.items():
            by_kind[kind] += len(values)

    refusals = list(graph.refusals())

    def size(p: Profile) -> int:
        return sum(len(v) for v in p.identifiers.values())

    # ``profiles`` is in canonical order; a stable sort keeps it among equal sizes.
    largest = sorted(profiles, key=lambda p: -size(p))[: max(top, 0)]

    extraction = graph.rules.extraction
    return {
        "input": run.label,
        "format": run.format,
        "formats_read": dict(run.formats.most_common()),
        "extraction": (
            "default"
            if extraction is None
            else [r.describe() for r in graph.rules.compiled.extraction]
        ),
        "store": run.store,
        "events": {
            "read": run.read,
            "applied": run.applied,
            "duplicates": run.duplicates,
            "late": run.late,
            "skipped": len(run.skipped),
        },
        "skipped_lines": [{"line": e.line, "problem": e.problem} for e in run.skipped],
        "skipped_by_reason": [
            {"reason": reason, "count": len(lines), "lines": lines[:_LINES_SHOWN]}
            for reason, lines in run.skipped_groups()
        ],
        "duplicate_lines": [{"line": ln, "first_line": first} for ln, first in run.duplicate_lines],
        "identifiers": {
            "total": stats.identifiers,
            "by_kind": {k: by_kind[k] for k in kinds if by_kind[k]},
        },
        "profiles": {
            "total": stats.profiles,
            "identified": stats.identified_profiles,
            "anonymous": stats.anonymous_profiles,
        },
        "joins": stats.joins,
        "refusals": {
            "total": len(refusals),
            "by_reason": dict(stats.refusals),
            "limit_exceeded_by_kind": dict(stats.refusals_by_kind),
            "items": [
                {
                    "line": run.line_of_event.get(r.event_id),
                    "event_id": r.event_id,
                    "identifier": {"kind": r.identifier.kind, "value": r.identifier.value},
                    "anchor": {"kind": r.anchor.kind, "value": r.anchor.value},
                    "reason": r.reason.value,
                    "kind": r.kind,
                }
                for r in refusals
            ],
        },
        "blocked_values": {
            "values": len(run.blocked),
            "times": sum(run.blocked.values()),
            "items": [
                {"kind": kind, "value": value, "reason": reason, "count": count}
                for (kind, value, reason), count in sorted(
                    run.blocked.items(), key=lambda item: (-item[1], item[0])
                )
            ],
        },
        "companies": [
            {
                "company_id": c.company_id,
                "profiles": sorted(c.profiles),
                "traits": {k: c.traits[k] for k in sorted(c.traits)},
            }
            for c in graph.companies()
        ],
        "largest_profiles": [
            {
                "user_id": p.user_id,
                "user_id_kind": p.user_id_kind,
                "identifiers": size(p),
                "by_kind": {k: len(p.identifiers[k]) for k in kinds if k in p.identifiers},
            }
            for p in largest
        ],
        "output": None if output is None else {"path": output, "profiles": len(profiles)},
    }


def _reason_label(reason: str, kind: str | None) -> str:
    """A refusal's reason code, with the kind for ``limit_exceeded``."""
    return reason if kind is None else f"{reason} ({kind})"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _more(out: IO[str], total: int, shown: int, indent: str) -> None:
    if total > shown:
        out.write(f"{indent}... {total - shown} more (see --json)\n")


def _print_text(s: dict[str, Any], out: IO[str]) -> None:
    ev = s["events"]
    w = out.write
    w(f"{PROG} resolve {show_text(s['input'])}\n\n")
    late = f", {ev['late']} late (replayed)"
    w(
        f"events       {ev['read']} read: {ev['applied']} applied, "
        f"{_plural(ev['duplicates'], 'duplicate')}{late}, {ev['skipped']} skipped\n"
    )
    for d in s["duplicate_lines"][:_TEXT_LIMIT]:
        w(f"  line {d['line']} repeats line {d['first_line']}\n")
    _more(out, len(s["duplicate_lines"]), _TEXT_LIMIT, "  ")

    read_as = ", ".join(f"{f} {n}" for f, n in s["formats_read"].items())
    w(f"format       {s['format']}" + (f" ({read_as})" if read_as else "") + "\n")
    ex = s["extraction"]
    w(
        "extraction   "
        + ("the default rules (docs/formats.md)" if ex == "default" else _plural(len(ex), "rule"))
        + "\n"
    )
    if s["store"] is not None:
        w(f"store        {show_text(s['store'])}\n")
    ids = s["identifiers"]
    kinds = ", ".join(f"{k} {n}" for k, n in ids["by_kind"].items())
    w(f"identifiers  {ids['total']}" + (f" ({kinds})" if kinds else "") + "\n")
    pr = s["profiles"]
    w(f"profiles     {pr['total']}: {pr['identified']} identified, {pr['anonymous']} anonymous\n")
    w(f"joins        {s['joins']}\n")

    ref = s["refusals"]
    w(f"refusals     {ref['total']}\n")
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in ref["items"]:
        groups.setdefault(_reason_label(item["reason"], item["kind"]), []).append(item)
    if groups:
        width = max(len(label) for label in groups)
        for label, items in sorted(groups.items()):
            w(f"  {label:<{width}}  {len(items)}\n")
            for item in items[:_TEXT_LIMIT]:
                line = item["line"]
                where = f"line {line}" if line is not None else show_text(item["event_id"])
                ident, anchor = item["identifier"], item["anchor"]
                w(
                    f"    {where}: {ident['kind']} {_short(ident['value'])} not joined to "
                    f"{anchor['kind']} {_short(anchor['value'])}\n"
                )
            _more(out, len(items), _TEXT_LIMIT, "    ")

    bl = s["blocked_values"]
    w(f"blocked      {_plural(bl['values'], 'value')}, {_plural(bl['times'], 'time')}\n")
    items = bl["items"][:_TEXT_LIMIT]
    if items:
        shown = [f"{b['kind']} {_short(b['value'])}" for b in items]
        width = max(len(x) for x in shown)
        for text, b in zip(shown, items, strict=True):
            extra = "" if b["reason"] == "blocked_value" else f"  ({b['reason']})"
            w(f"  {text:<{width}}  {_plural(b['count'], 'time')}{extra}\n")
    _more(out, len(bl["items"]), _TEXT_LIMIT, "  ")

    companies = s["companies"]
    w(f"companies    {len(companies)}\n")
    shown_c = companies[:_TEXT_LIMIT]
    if shown_c:
        heads = []
        for c in shown_c:
            name = c["traits"].get("name")
            shown_name = f" ({show_text(name)})" if isinstance(name, str) else ""
            heads.append(show_text(c["company_id"]) + shown_name)
        width = max(len(h) for h in heads)
        for head, c in zip(heads, shown_c, strict=True):
            members = ", ".join(show_text(m) for m in c["profiles"][:_TEXT_LIMIT])
            hidden = len(c["profiles"]) - _TEXT_LIMIT
            members += f", ... {hidden} more (see --json)" if hidden > 0 else ""
            w(f"  {head:<{width}}  {_plural(len(c['profiles']), 'profile')}: {members}\n")
    _more(out, len(companies), _TEXT_LIMIT, "  ")

    largest = s["largest_profiles"]
    if largest:
        w("largest profiles\n")
        canon = [show_text(p["user_id"]) for p in largest]
        width = max(len(c) for c in canon)
        for c, p in zip(canon, largest, strict=True):
            kinds = ", ".join(f"{k} {n}" for k, n in p["by_kind"].items())
            w(f"  {c:<{width}}  {_plural(p['identifiers'], 'identifier')} ({kinds})\n")
    if s["output"] is not None:
        path = show_text(s["output"]["path"])
        w(f"\nwrote {_plural(s['output']['profiles'], 'profile')} to {path}\n")


# -- operator commands: profile, explain, history, forget, export ----------------------------


class _Usage(Exception):
    """A command-line argument the command cannot use (exit status 1)."""


class _NotFound(Exception):
    """The identifiers asked about are not in the graph, or not one person (exit status 3);
    the message goes to standard output, it is an answer."""


#: what an identifier kind looks like (``user_id``, ``email``, ...)
_KIND_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def _open_graph(args: argparse.Namespace) -> IdentityGraph:
    """The graph a command reads: the ``--store`` it names, or the ``--input`` events read
    into memory."""
    url: str | None = args.store
    if url is None:
        return _read_file(args.input, skip=args.on_error == "skip", fmt=args.input_format).graph
    return _store_graph(url, None, create=False)


def _store_graph(url: str, rules: Rules | None, *, create: bool) -> IdentityGraph:
    """A graph on the store ``url``: with ``rules`` when given (a store recorded with other
    rules refuses them), else with the rules the store records (the defaults for a new one).
    ``create=False``: an SQLite file must exist (a mistyped path would read as empty)."""
    options = (
        {"create": False} if not create and url.partition("://")[0].lower() == "sqlite" else {}
    )
    try:
        store = store_from_url(url, **options)
    except IdentityResError as exc:
        raise _BadInput(f"cannot open store {show_text(url)}: {exc}") from None
    try:
        if rules is None:
            # No rules given: open the store with the rules it was written with (the
            # defaults for a store that has none recorded).
            default = Rules()
            recorded = store.bind_rules(default.record())
            rules = default if recorded.digest == default.record().digest else recorded.to_rules()
        return IdentityGraph(rules, store=store)
    except IdentityResError as exc:
        with contextlib.suppress(Exception):
            store.close()
        raise _BadInput(f"cannot open store {show_text(url)}: {exc}") from None
    except BaseException:  # bad stored rules: main reports it
        with contextlib.suppress(Exception):
            store.close()
        raise


#: The options a ``--rules`` file may set: those of ``identityres.Rules``.
_RULES_KEYS = (
    "kinds",
    "priority",
    "limits",
    "max_profile_size",
    "blocked_values",
    "blocked_patterns",
    "max_length",
    "normalizers",
    "default_blocked_values",
    "extraction",
)


def _rules_file(path: str) -> Rules:
    """The ``Rules`` a TOML file describes (docs/operator-tools.md, The command line): the
    options of ``Rules`` by name, ``"none"`` (or ``false``) for a lifted limit or cap,
    normalizers by importable name (``"identityres.normalize_email"``), extraction rules as
    ``[[extraction]]`` tables."""
    try:
        tomllib: Any = importlib.import_module("tomllib")  # Python 3.11+
    except ImportError:  # pragma: no cover - Python 3.10
        try:
            tomllib = importlib.import_module("tomli")
        except ImportError:
            raise _BadInput(
                "--rules needs tomli on Python 3.10: pip install 'identityres[cli]'"
            ) from None
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise _BadInput(f"cannot read {show_text(path)}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise _BadInput(f"{show_text(path)}: not valid TOML: {exc}") from None
    where = show_text(path)
    unknown = sorted(set(data) - set(_RULES_KEYS))
    if unknown:
        raise _BadInput(
            f"{where}: unknown option {unknown[0]!r}; the options are {', '.join(_RULES_KEYS)}"
        )
    options: dict[str, Any] = dict(data)
    if isinstance(options.get("limits"), dict):
        options["limits"] = {k: _lifted(v) for k, v in options["limits"].items()}
    if "max_profile_size" in options:
        options["max_profile_size"] = _lifted(options["max_profile_size"])
    if isinstance(options.get("normalizers"), dict):
        named: dict[str, Any] = {}
        for kind, name in options["normalizers"].items():
            if not isinstance(name, str):
                raise _BadInput(f"{where}: normalizers[{kind!r}]={name!r}: give a function's name")
            try:
                named[kind] = _import_normalizer(kind, name)
            except IdentityResError as exc:
                raise _BadInput(
                    f"{where}: normalizers[{kind!r}]={name!r}: cannot be imported"
                ) from (exc)
        options["normalizers"] = named
    if isinstance(options.get("extraction"), list):
        options["extraction"] = [
            {**r, "when": {k: tuple(v) if isinstance(v, list) else v for k, v in r["when"].items()}}
            if isinstance(r, dict) and isinstance(r.get("when"), dict)
            else r
            for r in options["extraction"]
        ]
    try:
        return Rules(**options)
    except IdentityResError as exc:
        raise _BadInput(f"{where}: {exc}") from None


def _lifted(value: Any) -> Any:
    """TOML has no null: ``"none"`` or ``false`` lifts a limit."""
    return None if value is False or value == "none" else value


def _parse_id(text: str, graph: IdentityGraph, what: str) -> Identifier:
    """``kind:value`` (``anonymous_id:abc``, ``email:a@b.c``) or a bare value, meaning a
    ``user_id``; a ``user_id`` that holds ``:`` after a kind-like word is written
    ``user_id:VALUE``. Validated and normalized as the library does."""
    kind, sep, value = text.partition(":")
    kinds = graph.rules.all_kinds
    if sep and kind in kinds:
        ident = Identifier(kind, value)
    elif sep and _KIND_NAME.match(kind):
        raise _Usage(
            f"{what} {_short(text)}: unknown identifier kind {kind!r} (kinds: "
            f"{', '.join(kinds)}); write a user id holding ':' as "
            f"{show_identifier(USER_ID, text)}"
        )
    else:
        ident = Identifier(USER_ID, text)
    try:
        return graph.identifier(identifier=ident)
    except ValidationError as exc:
        raise _Usage(f"{what} {_short(text)}: {exc.reason}") from None


def _missing(graph: IdentityGraph, ident: Identifier) -> str:
    """Why ``ident`` is in no profile."""
    reason = graph.rules.compiled.blocked_reason(ident.value)
    if reason is not None:
        return f"{_shown(ident)} is a blocked value ({reason.value}): it belongs to no profile"
    return f"{_shown(ident)} is not in the graph"


def _shown(ident: Identifier) -> str:
    return show_identifier(ident.kind, ident.value)


def _ident_json(ident: Identifier | None) -> dict[str, str] | None:
    return None if ident is None else {"kind": ident.kind, "value": ident.value}


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        _write_out(_dumps(data, indent=2) + "\n")
    else:
        _write_out(_printable(text if text.endswith("\n") else text + "\n"))


def _profile_text(profile: Profile, kinds: Sequence[str]) -> str:
    lines = [f"profile {show_text(profile.user_id)} ({profile.user_id_kind})"]
    identified = profile.identified_user_id
    lines.append(f"  identified   {'-' if identified is None else show_text(identified)}")
    size = sum(len(v) for v in profile.identifiers.values())
    lines.append(f"  identifiers  {size}")
    width = max(len(k) for k in profile.identifiers)
    for kind in kinds:
        for value in sorted(profile.identifiers.get(kind, ())):
            lines.append(f"    {kind:<{width}}  {show_text(value)}")
    if profile.company_ids:
        latest = show_text(profile.company_id or "")
        others = ", ".join(show_text(c) for c in sorted(profile.company_ids))
        lines.append(f"  companies    {others} (latest: {latest})")
    if profile.traits:
        lines.append("  traits")
        width = max(len(show_text(k)) for k in profile.traits)
        for key in sorted(profile.traits):
            value = json.dumps(profile.traits[key], sort_keys=True, default=repr)
            lines.append(f"    {show_text(key):<{width}}  {value}")
    lines.append(f"  first seen   {iso(profile.first_seen)}")
    lines.append(f"  last seen    {iso(profile.last_seen)}")
    return "\n".join(lines)


def _cmd_profile(args: argparse.Namespace, graph: IdentityGraph) -> int:
    ident = _parse_id(args.id, graph, "ID")
    profile = graph.profile(identifier=ident)
    if profile is None:
        raise _NotFound(_missing(graph, ident))
    _emit(args, profile_to_json(profile), _profile_text(profile, graph.rules.all_kinds))
    return EXIT_OK


def _step_json(step: Step) -> dict[str, Any]:
    return {
        "event_id": step.event_id,
        "etype": step.etype,
        "timestamp": iso(step.timestamp),
        "source": _ident_json(step.source),
        "target": _ident_json(step.target),
    }


def _cmd_explain(args: argparse.Namespace, graph: IdentityGraph) -> int:
    a = _parse_id(args.a, graph, "A")
    b = _parse_id(args.b, graph, "B")
    found = graph.explain(a, b)
    data: dict[str, Any]
    if found is not None:
        data = {
            "one_person": True,
            "a": _ident_json(a),
            "b": _ident_json(b),
            "profile": found.profile,
            "steps": [_step_json(s) for s in found.steps],
        }
        _emit(args, data, str(found))
        return EXIT_OK
    pa = graph.resolve(identifier=a)
    pb = graph.resolve(identifier=b)
    if pa is None or pb is None:
        text = "\n".join(_missing(graph, x) for x, p in ((a, pa), (b, pb)) if p is None)
    else:
        text = (
            f"{_shown(a)} and {_shown(b)} are not one person: profiles "
            f"{show_text(pa)} and {show_text(pb)}"
        )
    data = {
        "one_person": False,
        "a": _ident_json(a),
        "b": _ident_json(b),
        "profiles": [pa, pb],
    }
    _emit(args, data, text)
    return EXIT_NOT_FOUND


def _decision_json(d: Decision) -> dict[str, Any]:
    return {
        "event_id": d.event_id,
        "etype": d.etype,
        "timestamp": iso(d.timestamp),
        "anchor": _ident_json(d.anchor),
        "joined": [_ident_json(x) for x in d.joined],
        "already_joined": [_ident_json(x) for x in d.already_joined],
        "refused": [
            {"identifier": _ident_json(r.identifier), "reason": r.reason.value, "kind": r.kind}
            for r in d.refused
        ],
        "note": d.note,
    }


def _cmd_history(args: argparse.Namespace, graph: IdentityGraph) -> int:
    ident = _parse_id(args.id, graph, "ID")
    profile = graph.profile(identifier=ident)
    if profile is None:
        raise _NotFound(_missing(graph, ident))
    decisions = graph.history(identifier=ident)
    members = sorted(profile.all_identifiers(), key=_priority(graph))
    lines = [
        f"history of profile {show_text(profile.user_id)} ({', '.join(_shown(x) for x in members)})"
    ]
    lines.extend(str(d) for d in decisions)
    if not decisions:
        lines.append("no links, resets, splits or erasures")
    data = {
        "profile": profile.user_id,
        "identifiers": [_ident_json(x) for x in members],
        "decisions": [_decision_json(d) for d in decisions],
    }
    _emit(args, data, "\n".join(lines))
    return EXIT_OK


def _priority(graph: IdentityGraph) -> Callable[[Identifier], tuple[int, str]]:
    index = graph.rules.compiled.kind_index
    return lambda x: (index.get(x.kind, len(index)), x.value)


def _timestamp_arg(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_iso_timestamp(text, "--timestamp")
    except ValidationError as exc:
        reason = exc.reason
        if reason == "not an ISO-8601 timestamp":
            reason = (
                "not a time: give ISO-8601 with a timezone (2024-05-09T00:00:00Z) or epoch seconds"
            )
        raise _Usage(f"--timestamp {_short(text)}: {reason}") from None


def _cmd_forget(args: argparse.Namespace, graph: IdentityGraph) -> int:
    from identityres.errors import ErasureIncompleteError
    from identityres.storage.postgres import PostgresStore
    from identityres.storage.sqlite import SQLiteStore

    ident = _parse_id(args.id, graph, "ID")
    store = graph.store
    if args.verify and not isinstance(store, (SQLiteStore, PostgresStore)):
        raise _Usage(
            "--verify reads the files of an SQLite store (--store sqlite:///FILE) or the "
            f"tables of a PostgreSQL store (postgresql://...); {show_text(args.store)} is "
            "neither"
        )
    try:
        code = _forget(args, graph, ident)
    except ErasureIncompleteError as exc:
        # committed, but bytes may remain: say so, and fail, so that a script notices
        sys.stderr.write(f"{PROG} forget: {exc}\n")
        code = EXIT_BAD_INPUT
    if args.verify and isinstance(store, SQLiteStore):
        # The bytes of the value as SQLite stores text (UTF-8), in every file of the store.
        found = store.find_bytes(ident.value.encode("utf-8"))
        if found:
            where = ", ".join(
                f"{show_text(path)} ({len(offsets)})" for path, offsets in sorted(found.items())
            )
            sys.stdout.write(
                f"not verified: copies of the value remain in {where}; the next open of the "
                "store removes them once no other connection is reading it (a short value can "
                "also occur inside other data)\n"
            )
            code = EXIT_BAD_INPUT
        else:
            files = ", ".join(show_text(path) for path in store.files())
            sys.stdout.write(f"verified: no copy of the value remains in {files}\n")
    if args.verify and isinstance(store, PostgresStore):
        code = _verify_postgres(store, ident.value, code)
    return code


def _verify_postgres(store: Any, value: str, code: int) -> int:
    """``forget --verify`` on PostgreSQL: no live row of the namespace may hold the value.
    What a query cannot see is said, not checked (docs/storage.md, "PostgreSQL")."""
    found = store.find_value(value)
    namespace = show_text(store.namespace)
    if found:
        where = ", ".join(f"{show_text(t)} ({n})" for t, n in sorted(found.items()))
        sys.stdout.write(
            f"not verified: live rows of namespace {namespace} still hold the value: {where} "
            "(a short value can also occur inside other data)\n"
        )
        return EXIT_BAD_INPUT
    sys.stdout.write(
        f"verified: no live row of namespace {namespace} holds the value; not checked: the "
        "dead row versions PostgreSQL keeps until VACUUM reclaims them (PostgresStore.vacuum), "
        "the write-ahead log, archives, replicas and backups\n"
    )
    return code


def _forget(args: argparse.Namespace, graph: IdentityGraph, ident: Identifier) -> int:
    ts = _timestamp_arg(args.timestamp)
    before = graph.profile(identifier=ident)
    try:
        outcome = graph.forget(ident, timestamp=ts, event_id=args.event_id)
    except ValidationError as exc:  # a finite timestamp, an event id reused for another event
        raise _Usage(f"{exc.field} {_short(exc.value)}: {exc.reason}") from None
    eid = show_text(outcome.event_id)
    if outcome.duplicate:
        sys.stdout.write(f"{_shown(ident)}: erasure {eid} was already applied\n")
        return EXIT_OK
    if before is None:
        sys.stdout.write(
            f"{_shown(ident)} was not in the graph; it is on the suppression list now "
            f"(event {eid}), so no event will bring it in\n"
        )
        return EXIT_OK
    lines = [
        f"forgot {_shown(ident)} (event {eid}): its links, traits and company links are "
        "erased; only a keyed hash of it is kept, on the suppression list"
    ]
    rest = sorted(before.all_identifiers() - {ident}, key=_priority(graph))
    # One profile read per resulting profile, not one per identifier: on a store each read
    # builds the whole profile, so asking identifier by identifier was quadratic.
    now: dict[str, list[Identifier]] = {}
    placed: dict[Identifier, str] = {}
    for x in rest:
        canon = placed.get(x)
        if canon is None:
            profile = graph.profile(identifier=x)
            if profile is None:
                continue
            canon = profile.user_id
            placed.update(dict.fromkeys(profile.all_identifiers(), canon))
        now.setdefault(canon, []).append(x)
    if now:
        lines.append(f"what was profile {show_text(before.user_id)} is now:")
        for canon, xs in now.items():
            lines.append(f"  {show_text(canon)}: {', '.join(_shown(x) for x in xs)}")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _cmd_export(args: argparse.Namespace, graph: IdentityGraph) -> int:
    lookup: dict[str, Any] = {}
    what = "the whole graph"
    if args.profile is not None:
        ident = _parse_id(args.profile, graph, "--profile")
        canon = graph.resolve(identifier=ident)
        if canon is None:
            raise _NotFound(_missing(graph, ident))
        lookup["identifier"] = ident
        what = f"profile {show_text(canon)}"
    fmt: str = args.format
    if fmt == "graphml":
        try:
            g = export.graphml_ready(export.to_networkx(graph, **lookup))
        except ImportError as exc:
            raise _BadInput(f"--format graphml: {exc}") from None
        nx: Any = importlib.import_module("networkx")
        buffer = io.BytesIO()
        # in ASCII, as the JSON: other characters as character references (&#8238;)
        nx.write_graphml(g, buffer, encoding="us-ascii")
        # A carriage return is written raw in text content, where an XML reader would turn it
        # into a newline (and a terminal would move the cursor): write its reference instead.
        # The writer puts none in the markup itself, so each one is inside a value.
        data = buffer.getvalue().replace(b"\r", b"&#13;")
    elif fmt == "dot":
        data = export.to_dot(graph, **lookup).encode("utf-8")
    elif fmt == "mermaid":
        data = export.to_mermaid(graph, **lookup).encode("utf-8")
    else:
        records = export.to_jsonl_records(graph, **lookup)
        data = "".join(_dumps(r) + "\n" for r in records).encode("ascii")
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        _write_bytes(args.output, data)
        _write_out(f"wrote {what} as {fmt} to {show_text(args.output)}\n")
    return EXIT_OK


def _write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (see :func:`_replacing`)."""
    with _replacing(path, binary=True) as f:
        f.write(data)


_OPERATOR_COMMANDS: dict[str, Callable[[argparse.Namespace, IdentityGraph], int]] = {
    "profile": _cmd_profile,
    "explain": _cmd_explain,
    "history": _cmd_history,
    "forget": _cmd_forget,
    "export": _cmd_export,
}


def _operator(args: argparse.Namespace) -> int:
    if args.command == "forget":
        if args.input is not None:
            raise _Usage(
                "forget erases from a store: give --store URL (events read with --input live "
                "in memory only, so the erasure would be thrown away)"
            )
        if args.store is None:
            raise _Usage("forget needs --store URL (e.g. --store sqlite:///ids.db)")
    output: str | None = getattr(args, "output", None)
    if output is not None:  # before the store is opened or the events are read
        inputs = _store_files(args.store) if args.store is not None else []
        if args.input is not None and args.input != "-":
            inputs.append(("the events file", args.input))
        _check_output(output, inputs)
    graph = _open_graph(args)
    try:
        return _OPERATOR_COMMANDS[args.command](args, graph)
    except IdentityResError as exc:
        # (validation errors are turned into usage errors above; this is a failing store)
        if args.debug:
            raise
        raise _BadInput(f"{show_text(args.store or args.input)}: {exc}") from None
    finally:
        graph.close()


# -- entry point ---------------------------------------------------------------------------


def _parser() -> _Parser:
    from identityres import __version__

    parser = _Parser(
        prog=PROG,
        description="Identity resolution: stitch anonymous visitors, signed-in users and API "
        "callers into profiles.",
        epilog="Exit status: 0 ok, 1 usage error, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    resolve = commands.add_parser(
        "resolve",
        help="resolve a JSONL file of Segment-spec messages into profiles",
        description="Read one Segment-spec message per line (identify, track, page, screen, "
        "alias, group, reset), resolve them into profiles and print a summary.",
        epilog="Exit status: 0 ok (also when --on-error skip skipped lines), 1 usage error, "
        "2 bad input (unreadable file, bad line in raise mode, unwritable --output).",
    )
    resolve.add_argument(
        "events", metavar="EVENTS.jsonl", help="the messages, one JSON object per line; - for stdin"
    )
    resolve.add_argument(
        "-o",
        "--output",
        metavar="PROFILES.jsonl",
        help="write the profiles here, one JSON object per line, in canonical order",
    )
    resolve.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="on a bad line: stop with exit status 2 (raise, the default) or skip it and report "
        "it (skip)",
    )
    resolve.add_argument(
        "--format",
        choices=("auto", *FORMATS),
        default="auto",
        help="what the lines are: Segment/RudderStack, PostHog, Mixpanel, Amplitude (HTTP API "
        "v2) or Moesif messages or batch bodies, or auto (the default): each line's own, "
        "detected (docs/formats.md)",
    )
    resolve.add_argument(
        "--store",
        metavar="URL",
        help="write the profiles to this store, e.g. sqlite:///ids.db: created, or extended "
        "with the rules it records (default: in memory, for this run only)",
    )
    resolve.add_argument(
        "--rules",
        metavar="RULES.toml",
        help="the merge and extraction rules, as TOML: the options of identityres.Rules "
        "(docs/operator-tools.md)",
    )
    resolve.add_argument(
        "--max-errors",
        metavar="N",
        type=_non_negative,
        help="with --on-error skip: stop with exit status 2 after more than N bad lines",
    )
    resolve.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar on standard error (there is none when it is not a terminal)",
    )
    resolve.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    resolve.add_argument(
        "--engine",
        choices=("online", "batch", "auto"),
        default="online",
        help="online: ingest line by line (the default); batch: identityres.batch, for large "
        "inputs, Parquet or a directory (needs identityres[batch], docs/batch.md); auto: batch "
        "for Parquet, a directory or a file of 64 MiB or more",
    )
    resolve.add_argument(
        "--tables",
        metavar="DIR",
        help="with the batch engine: write the identity map, profiles, refusals, companies and "
        "stats tables into DIR",
    )
    resolve.add_argument(
        "--tables-format",
        choices=("parquet", "csv"),
        default="parquet",
        help="the format of --tables (default parquet)",
    )
    resolve.add_argument(
        "--top",
        type=_non_negative,
        default=5,
        metavar="N",
        help="how many of the largest profiles to show (default 5)",
    )
    _add_operator_commands(commands)
    serve = commands.add_parser(
        "serve",
        help="run the collector: Segment's HTTP API (/v1/batch, ...) written to a store",
        description="Accept what Segment's SDKs send (analytics.js, analytics-python, "
        "RudderStack) and write it to the store; needs identityres[serve] (uvicorn). The SDKs "
        "authenticate with a write key: give the keys in --write-key-file (one a line) or in "
        "IDENTITYRES_WRITE_KEYS (comma-separated). Stops on SIGINT or SIGTERM.",
        epilog="Exit status: 0 stopped, 1 usage error (no write key, no uvicorn), 2 bad input "
        "(a store that cannot be opened, an unreadable key file).",
    )
    serve.add_argument("--store", metavar="URL", required=True, help="e.g. sqlite:///ids.db")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=_non_negative, default=8080, help="port (8080)")
    serve.add_argument("--write-key-file", metavar="FILE", help="the write keys, one a line")
    serve.add_argument(
        "--max-body",
        type=_non_negative,
        default=512 * 1024,
        metavar="BYTES",
        help="the largest request body, before and after gzip (512 KiB)",
    )

    from identityres._analytics_cli import add_commands

    add_commands(commands)
    for command in commands.choices.values():
        # also after the command; SUPPRESS: absent, it keeps the value given before it
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
    return parser


_DEBUG_HELP = "show the traceback of an unexpected error (a damaged store, a bug)"

_SOURCE_EPILOG = (
    "ID is kind:value (anonymous_id:abc, email:a@b.c) or a bare value, meaning a user_id "
    "(write user_id:VALUE for a user id holding ':'). Exit status: 0 ok, 1 usage error, "
    "2 bad input (unreadable or bad events file, store that cannot be opened or read, "
    "unwritable output), 3 not found (an identifier not in the graph; explain: not one person)."
)


def _source(*, store_only: bool = False) -> argparse.ArgumentParser:
    """The options that name the graph a command reads: ``--store URL`` or ``--input FILE``."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("the graph")
    if store_only:
        group.add_argument("--store", metavar="URL", help="the store, e.g. sqlite:///ids.db")
        group.add_argument("--input", help=argparse.SUPPRESS)
        return parent
    one = group.add_mutually_exclusive_group(required=True)
    one.add_argument("--store", metavar="URL", help="read this store, e.g. sqlite:///ids.db")
    one.add_argument(
        "--input",
        metavar="EVENTS.jsonl",
        help="read these Segment-spec messages into memory first (as resolve does); - for stdin",
    )
    group.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="with --input, on a bad line: stop (raise, the default) or skip it and report it",
    )
    group.add_argument(
        "--input-format",
        choices=("auto", *FORMATS),
        default="auto",
        help="with --input, what the lines are (docs/formats.md); auto (the default) detects it",
    )
    return parent


def _add_operator_commands(commands: Any) -> None:
    source = _source()
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print the answer as JSON")
    profile = commands.add_parser(
        "profile",
        parents=[source, json_flag],
        help="show the profile holding an identifier",
        description="Show the profile holding ID: canonical id, identifiers, companies, "
        "traits, first and last seen.",
        epilog=_SOURCE_EPILOG,
    )
    profile.add_argument("id", metavar="ID", help="an identifier of the profile")
    explain = commands.add_parser(
        "explain",
        parents=[source, json_flag],
        help="why are two identifiers one person? the chain of links joining them",
        description="Print the shortest chain of accepted links (events) that joins A and B, "
        "or say that they are not one person (exit status 3).",
        epilog=_SOURCE_EPILOG,
    )
    explain.add_argument("a", metavar="A", help="an identifier")
    explain.add_argument("b", metavar="B", help="another identifier")
    history = commands.add_parser(
        "history",
        parents=[source, json_flag],
        help="the decisions that shaped the profile holding an identifier",
        description="Print, in time order, the joins, refusals (with reasons), forced merges, "
        "resets, splits and erasures that shaped the profile holding ID.",
        epilog=_SOURCE_EPILOG,
    )
    history.add_argument("id", metavar="ID", help="an identifier of the profile")
    forget = commands.add_parser(
        "forget",
        parents=[_source(store_only=True)],
        help="GDPR erasure of an identifier from a store",
        description="Erase ID from the store (GDPR erasure): its links, traits and company "
        "links. Only a keyed hash of it is kept, on a suppression list, so that no replayed "
        "or late event brings it back; identifiers held together only by it fall apart.",
        epilog=_SOURCE_EPILOG,
    )
    forget.add_argument("id", metavar="ID", help="the identifier to erase")
    forget.add_argument(
        "--timestamp",
        metavar="WHEN",
        help="when the erasure takes effect: ISO-8601 with a zone, or epoch seconds (default: now)",
    )
    forget.add_argument("--event-id", metavar="EVENT_ID", help="the erasure's event id")
    forget.add_argument(
        "--verify",
        action="store_true",
        help="then say whether any copy of the value remains: SQLite, in the database file "
        "and its -wal and -shm files (its UTF-8 bytes); PostgreSQL, in any live row of the "
        "namespace (not dead row versions before VACUUM, nor the WAL); exit status 2 if one "
        "does",
    )
    exporter = commands.add_parser(
        "export",
        parents=[source],
        help="export the identity graph (graphml, dot, mermaid, jsonl)",
        description="Write the identity graph of one profile (--profile) or of the whole graph: "
        "GraphML (needs identityres[networkx]), Graphviz DOT or a Mermaid flowchart for "
        "people, or JSON lines (nodes, then edges).",
        epilog=_SOURCE_EPILOG,
    )
    exporter.add_argument("--format", required=True, choices=("graphml", "dot", "mermaid", "jsonl"))
    exporter.add_argument("--profile", metavar="ID", help="only the profile holding ID")
    exporter.add_argument(
        "-o", "--output", metavar="FILE", help="write here (default: standard output)"
    )


def _write_keys(args: argparse.Namespace) -> list[str]:
    if args.write_key_file is not None:
        try:
            with open(args.write_key_file, encoding="utf-8") as keys:
                text = keys.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise _BadInput(f"{show_text(args.write_key_file)}: {exc}") from None
        found = [line.strip() for line in text.splitlines()]
    else:
        found = os.environ.get("IDENTITYRES_WRITE_KEYS", "").split(",")
    found = [k.strip() for k in found if k.strip() and not k.strip().startswith("#")]
    if not found:
        raise _Usage(
            "serve needs at least one write key: --write-key-file FILE or IDENTITYRES_WRITE_KEYS"
        )
    return found


def _serve(args: argparse.Namespace) -> int:
    keys = _write_keys(args)
    try:
        import uvicorn
    except ImportError:
        raise _Usage(
            "serve needs uvicorn, from the serve extra: pip install 'identityres[serve]'"
        ) from None
    from identityres.integrations.collector import Collector

    try:
        graph = IdentityGraph(store=args.store)
    except IdentityResError as exc:
        raise _BadInput(f"{show_text(args.store)}: {exc}") from None
    try:
        try:
            app = Collector(graph, write_keys=keys, max_body=args.max_body)
        except IdentityResError as exc:
            raise _Usage(str(exc)) from None
        uvicorn.run(app, host=args.host, port=args.port, lifespan="on", log_level="info")
    finally:
        graph.close()
    return EXIT_OK


def _non_negative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {n}")
    return n


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "resolve":
            return _resolve(args)
        if args.command == "serve":
            return _serve(args)
        if args.command in ("funnel", "users", "journey"):
            from identityres._analytics_cli import run

            return run(args)
        return _operator(args)
    except _NotFound as exc:  # an answer: standard output
        _write_out(_printable(f"{exc}\n"))
        return EXIT_NOT_FOUND


def _failure(args: argparse.Namespace, exc: Exception, *, unexpected: bool) -> str:
    """One line for an error of the library (``unexpected``: of anything else) while the
    command read its store, its events or wrote its answer."""
    source = getattr(args, "store", None) or getattr(args, "input", None) or args.events
    message = str(exc)
    if unexpected:
        name = type(exc).__name__
        message = f"{name}: {message}" if message else name
        damaged = "the store may be damaged; " if getattr(args, "store", None) else ""
        message += f" ({damaged}--debug shows the traceback)"
    return _printable(f"{show_text(source)}: {message}", one_line=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageExit as exc:
        return exc.code
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _run(args)
    except _Usage as exc:
        _write_err(f"{PROG} {args.command}: error: {_printable(str(exc), one_line=True)}\n")
        return EXIT_USAGE
    except _BadInput as exc:
        _write_err(f"{PROG}: error: {_printable(str(exc), one_line=True)}\n")
        return EXIT_BAD_INPUT
    except IdentityResError as exc:
        # a store failing outside a command's own reads (closing it), or the in-memory graph
        if args.debug:
            raise
        _write_err(f"{PROG} {args.command}: error: {_failure(args, exc, unexpected=False)}\n")
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # The reader went away (``identityres resolve ... | head``): stop quietly, and keep
        # the interpreter from failing again when it flushes stdout at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BAD_INPUT
    except Exception as exc:
        # The last line of defence: bad stored data (a row that does not decode, a timestamp
        # out of range) raises what the reading code raises. One line, not a traceback.
        if args.debug:
            raise
        _write_err(f"{PROG} {args.command}: error: {_failure(args, exc, unexpected=True)}\n")
        return EXIT_BAD_INPUT
