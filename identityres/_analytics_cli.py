"""The analytics commands of the command line (docs/analytics.md, "The command line"):

::

    identityres funnel EVENTS.jsonl|EVENTS.parquet --step NAME --step NAME ... --within 7d
                       [--order sequential|strict|any] [--count uniques|totals] [--by KEY]
                       [--store URL] [--json] [--plot FILE.png|FILE.svg]
    identityres users EVENTS.jsonl [--event NAME] [--by day|week|company|PROPERTY]
                       [--store URL] [--json] [--plot FILE]
    identityres journey ID (--store URL | --input EVENTS.jsonl) [--json] [--plot FILE]

Without ``--store`` the events file is resolved into an in-memory graph first (as ``resolve``
does) and analysed against it; with ``--store`` the events are stitched with that store's
identity map (``journey``: the events the store kept, or ``--input``).
"""

from __future__ import annotations

import argparse
from typing import Any

from identityres import analytics
from identityres._explain import iso, show_text
from identityres._graph import IdentityGraph
from identityres.analytics._inputs import is_parquet, read_jsonl, read_parquet
from identityres.cli import (
    EXIT_OK,
    _BadInput,
    _dumps,
    _emit,
    _NotFound,
    _open_graph,
    _parse_id,
    _Usage,
)
from identityres.errors import ConfigurationError, IdentityResError, ValidationError

COMMANDS = ("funnel", "users", "journey")


def add_commands(commands: Any) -> None:
    plot = argparse.ArgumentParser(add_help=False)
    plot.add_argument("--json", action="store_true", help="print the answer as JSON")
    plot.add_argument(
        "--plot",
        metavar="FILE",
        help="also draw a chart, PNG or SVG by the file's suffix (needs identityres[plot])",
    )
    plot.add_argument(
        "--store",
        metavar="URL",
        help="stitch the events with this store's profiles, e.g. sqlite:///ids.db",
    )
    plot.add_argument(
        "--engine",
        choices=("auto", "python", "duckdb"),
        default="auto",
        help="the query engine (default auto: DuckDB for large files)",
    )
    funnel = commands.add_parser(
        "funnel",
        parents=[plot],
        help="a funnel of people across identifiers",
        description="Count the people who reach each step, in order, within --within of their "
        "first step (docs/analytics.md).",
    )
    funnel.add_argument("events", metavar="EVENTS.jsonl")
    funnel.add_argument(
        "--step",
        action="append",
        required=True,
        metavar="NAME",
        help="an event name; repeat in step order",
    )
    funnel.add_argument(
        "--within", required=True, metavar="DURATION", help="e.g. 30m, 12h, 7d, 2w or seconds"
    )
    funnel.add_argument("--order", choices=("sequential", "strict", "any"), default="sequential")
    funnel.add_argument("--count", choices=("uniques", "totals"), default="uniques")
    funnel.add_argument(
        "--by",
        metavar="KEY",
        help="break down by company, day, week or a property of the first step",
    )
    funnel.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="NAME",
        help="an event that ends an attempt",
    )
    users = commands.add_parser(
        "users",
        parents=[plot],
        help="unique people, optionally by day, week, company",
        description="Count distinct people (not identifiers) among the events.",
    )
    users.add_argument("events", metavar="EVENTS.jsonl")
    users.add_argument("--event", action="append", metavar="NAME", help="only these events")
    users.add_argument("--by", metavar="KEY", help="day, week, company or a property name")
    journey = commands.add_parser(
        "journey",
        help="one person's events across every identifier they had",
        description="Print the events of the person holding ID in time order, each with the "
        "identifier it came from.",
    )
    journey.add_argument("id", metavar="ID", help="an identifier of the person")
    source = journey.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", metavar="URL", help="a store that kept events")
    source.add_argument("--input", metavar="EVENTS.jsonl", help="resolve these events first")
    journey.add_argument("--json", action="store_true", help="print the answer as JSON")
    journey.add_argument("--plot", metavar="FILE", help="draw a timeline (PNG or SVG)")


def _graph(args: argparse.Namespace) -> tuple[IdentityGraph, Any]:
    """The graph, and the events to give the queries."""
    if args.store is not None:
        if getattr(args, "input", None) is None:
            args.input = None
        args.on_error = "raise"
        return _open_graph(args), getattr(args, "events", None) or args.input
    path = getattr(args, "events", None) or args.input
    graph = IdentityGraph(keep_events=True)
    try:
        graph.ingest(read_parquet(path) if is_parquet(path) else read_jsonl(path))
    except ValidationError as exc:
        graph.close()
        raise _BadInput(f"{show_text(path)}: {exc}") from None
    return graph, None


def _duration(seconds: float | None) -> str:
    """``45s``, ``8m 06s``, ``3h 05m``, ``2d 04h``."""
    if seconds is None:
        return "-"
    s = round(seconds)
    for big, size, small, part in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if s >= size:
            return f"{s // size}{big} {s % size // part:02d}{small}"
    return f"{s}s"


def _funnel_text(title: str, r: analytics.FunnelResult, what: str) -> list[str]:
    width = max(len(show_text(s)) for s in r.steps)
    lines = [
        title,
        f"  {'step':<{width + 3}}  {what:>8}  {'of first':>8}  {'of prev':>8}  "
        f"{'median':>8}  {'p90':>8}",
    ]
    for k, step in enumerate(r.steps):
        lines.append(
            f"  {k + 1}. {show_text(step):<{width}}  {r.counts[k]:>8}  "
            f"{r.conversion_from_first[k]:>8.1%}  {r.conversion_from_previous[k]:>8.1%}  "
            f"{_duration(r.median_seconds[k]):>8}  {_duration(r.p90_seconds[k]):>8}"
        )
    return lines


def _key(key: Any) -> str:
    return "(none)" if key is None else show_text(str(key))


def _plot_module() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise _Usage("--plot needs matplotlib: pip install 'identityres[plot]'") from None
    return plt


def _save(plt: Any, fig: Any, path: str) -> None:
    if not path.lower().endswith((".png", ".svg")):
        raise _Usage(f"--plot {show_text(path)}: the file must end in .png or .svg")
    try:
        fig.savefig(path, bbox_inches="tight", dpi=120, metadata=None)
    except OSError as exc:
        raise _BadInput(f"cannot write {show_text(path)}: {exc}") from None
    finally:
        plt.close(fig)


def plot_funnel(result: Any, path: str, title: str) -> None:
    plt = _plot_module()
    results = result if isinstance(result, dict) else {None: result}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    n = len(results)
    width = 0.8 / n
    first = next(iter(results.values()))
    for i, (key, r) in enumerate(results.items()):
        xs = [k + i * width for k in range(len(r.steps))]
        bars = ax.bar(xs, r.counts, width=width, label=None if key is None else _key(key))
        for bar, c, conv in zip(bars, r.counts, r.conversion_from_first, strict=True):
            ax.annotate(
                f"{c}\n{conv:.0%}",
                (bar.get_x() + bar.get_width() / 2, c),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks([k + width * (n - 1) / 2 for k in range(len(first.steps))])
    ax.set_xticklabels(first.steps)
    ax.set_ylabel("people")
    ax.set_title(title)
    ax.margins(y=0.25)
    if n > 1:
        ax.legend()
    _save(plt, fig, path)


def plot_users(counts: Any, path: str, title: str) -> None:
    plt = _plot_module()
    if not isinstance(counts, dict):
        counts = {"all": counts}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    keys = [_key(k) for k in counts]
    ax.bar(keys, list(counts.values()))
    ax.set_ylabel("unique people")
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    _save(plt, fig, path)


def plot_journey(steps: Any, path: str, title: str) -> None:
    """One row per identifier the events came from, one column per event in time order
    (evenly spaced, so that a burst of events stays readable), labelled with its time."""
    plt = _plot_module()
    sources = list(dict.fromkeys(str(s.identifier) for s in steps))
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(steps) + 3), 1.8 + 0.45 * len(sources)))
    xs = range(len(steps))
    ys = [sources.index(str(s.identifier)) for s in steps]
    ax.plot(xs, ys, color="0.8", zorder=1)
    ax.scatter(xs, ys, s=36, zorder=2, c=[f"C{y}" for y in ys])
    for x, y, s in zip(xs, ys, steps, strict=True):
        ax.annotate(
            s.name, (x, y), textcoords="offset points", xytext=(2, 7), fontsize=7, rotation=40
        )
    ax.set_yticks(range(len(sources)))
    ax.set_yticklabels(sources)
    ax.set_ylim(-0.5, len(sources) + 0.3)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(
        [s.timestamp.strftime("%m-%d %H:%M") for s in steps], rotation=60, ha="right", fontsize=7
    )
    ax.set_title(title)
    _save(plt, fig, path)


def run(args: argparse.Namespace) -> int:
    graph, events = _graph(args)
    try:
        return _COMMANDS[args.command](args, graph, events)
    except ValidationError as exc:
        raise _Usage(f"{exc.field}: {exc.reason}") from None
    except ConfigurationError as exc:
        raise _Usage(str(exc)) from None
    except IdentityResError as exc:
        raise _BadInput(str(exc)) from None
    finally:
        graph.close()


def _funnel(args: argparse.Namespace, graph: IdentityGraph, events: Any) -> int:
    result = analytics.funnel(
        graph,
        events,
        steps=args.step,
        within=args.within,
        order=args.order,
        count=args.count,
        by=args.by,
        exclude=args.exclude,
        engine=args.engine,
    )
    what = "people" if args.count == "uniques" else "entries"
    title = f"funnel within {args.within} ({args.order}, {args.count})"
    if isinstance(result, dict):
        data: Any = {
            "by": args.by,
            "results": [{"key": key, **r.to_dict()} for key, r in result.items()],
        }
        lines = [title + f", by {show_text(args.by)}"]
        for key, r in result.items():
            lines.extend(_funnel_text(f"{args.by} {_key(key)}", r, what))
    else:
        data = result.to_dict()
        lines = _funnel_text(title, result, what)
    if args.plot:
        plot_funnel(result, args.plot, " → ".join(args.step))
    _emit(args, data, "\n".join(lines))
    return EXIT_OK


def _users(args: argparse.Namespace, graph: IdentityGraph, events: Any) -> int:
    counts = analytics.unique_users(graph, events, event=args.event, by=args.by, engine=args.engine)
    if isinstance(counts, dict):
        data: Any = {"by": args.by, "counts": [{"key": k, "people": n} for k, n in counts.items()]}
        width = max([len(_key(k)) for k in counts] or [1])
        text = "\n".join(
            [f"unique people by {show_text(args.by)}"]
            + [f"  {_key(k):<{width}}  {n}" for k, n in counts.items()]
        )
    else:
        data = {"people": counts}
        text = f"{counts} unique people"
    if args.plot:
        plot_users(counts, args.plot, f"unique people by {args.by}" if args.by else "people")
    _emit(args, data, text)
    return EXIT_OK


def _journey(args: argparse.Namespace, graph: IdentityGraph, events: Any) -> int:
    ident = _parse_id(args.id, graph, "ID")
    if graph.profile(identifier=ident) is None:
        raise _NotFound(f"{show_text(str(ident))} is not in the graph")
    try:
        steps = analytics.journey(graph, events, identifier=ident)
    except ConfigurationError as exc:
        raise _Usage(f"{exc} (give --input EVENTS.jsonl)") from None
    data = [
        {
            "timestamp": iso(s.timestamp),
            "event_id": s.event_id,
            "type": s.type,
            "name": s.name,
            "identifier": {"kind": s.identifier.kind, "value": s.identifier.value},
            "properties": s.properties,
            "context": s.context,
        }
        for s in steps
    ]
    width = max([len(show_text(s.name)) for s in steps] or [1])
    lines = [f"journey of {show_text(str(ident))}: {len(steps)} events"]
    lines.extend(
        f"  {iso(s.timestamp)}  {show_text(s.name):<{width}}  {show_text(str(s.identifier))}"
        + ("" if s.context is None else f"  {_dumps(s.context)}")
        for s in steps
    )
    if args.plot:
        plot_journey(steps, args.plot, f"journey of {ident}")
    _emit(args, data, "\n".join(lines))
    return EXIT_OK


_COMMANDS = {"funnel": _funnel, "users": _users, "journey": _journey}
