"""`pyntpctl plot STATSDIR`: pictures of the statistics files, for people rather than scripts.

Reads every loopstats and peerstats file in STATSDIR (all generations: `loopstats.20261126`,
the bare link `loopstats`, `.gz` files from logrotate; a file reached under two names is read
once), in time order, and writes into OUTDIR:

    offset.png        the clock's offset over time (loopstats)
    frequency.png     the frequency correction over time (loopstats)
    jitter.png        the loop's jitter and the frequency wander (loopstats)
    peer-offsets.png  each source's offset over time (peerstats)
    index.html        the pictures and a summary table

Lines that are not in ntpd's format are skipped and counted in the summary; a directory that
is missing, unreadable or holds no statistics is an error (exit status 1). matplotlib is an
optional extra: `pip install 'pyntpd[plot]'`.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import datetime
import gzip
import html
import math
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyntpd.stats.statsformat import (
    LoopStats,
    PeerStats,
    StatsParseError,
    parse_loopstats,
    parse_peerstats,
)

EXIT_OK = 0
EXIT_FAILURE = 1
INSTALL_HINT = "pip install 'pyntpd[plot]'"
EXAMPLES_KEPT = 5  # skipped lines quoted in the summary, per set
MAX_LINE = 4096  # longer lines are not statistics lines: skipped unread

Record = TypeVar("Record", LoopStats, PeerStats)


class PlotError(Exception):
    """Something the user must fix; the message says what."""


# --- reading ---------------------------------------------------------------------------------


@dataclass
class SetData:
    """One statistics set as read: its records in time order, and what was skipped."""

    name: str
    records: list[Any] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    skipped: int = 0
    outside: int = 0  # lines before --since or after --until
    examples: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def set_files(statsdir: str, stem: str) -> list[str]:
    """The files of one set in `statsdir`: STEM and STEM.anything, each file once."""
    try:
        names = sorted(os.listdir(statsdir))
    except FileNotFoundError:
        raise PlotError(f"{statsdir}: no such directory") from None
    except NotADirectoryError:
        raise PlotError(f"{statsdir}: not a directory") from None
    except PermissionError:
        raise PlotError(f"{statsdir}: permission denied (cannot list the directory)") from None
    except OSError as exc:
        raise PlotError(f"{statsdir}: {exc.strerror or exc}") from None
    return [os.path.join(statsdir, n) for n in names if n == stem or n.startswith(stem + ".")]


def _lines(path: str) -> Iterator[str]:
    opener: Callable[..., Any] = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="ascii", errors="replace") as f:
        yield from f


def read_set(
    statsdir: str,
    stem: str,
    parse: Callable[[str], Record],
    since: float = -math.inf,
    until: float = math.inf,
) -> SetData:
    data = SetData(stem)
    seen: set[tuple[int, int]] = set()
    for path in set_files(statsdir, stem):
        try:
            st = os.stat(path)
        except OSError as exc:
            data.unreadable.append(f"{path}: {exc.strerror or exc}")
            continue
        if not stat.S_ISREG(st.st_mode):
            data.unreadable.append(f"{path}: not a regular file")
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue  # the link to the current generation, or another name for a file read
        seen.add((st.st_dev, st.st_ino))
        try:
            _read_file(path, parse, since, until, data)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            data.unreadable.append(f"{path}: {getattr(exc, 'strerror', None) or exc}")
            continue
        data.files.append(path)
    data.records.sort(key=lambda r: r.time)
    return data


def _read_file(path: str, parse: Callable[[str], Record], since: float, until: float,
               data: SetData) -> None:
    read_lines(path, _lines(path), parse, since, until, data)


def read_lines(path: str, lines: Iterable[str], parse: Callable[[str], Record], since: float,
               until: float, data: SetData) -> None:
    """The records of one file's lines into `data`; what does not parse is counted."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            if len(line) > MAX_LINE:
                raise StatsParseError(f"line longer than {MAX_LINE} characters")
            record = parse(line)
        except StatsParseError as exc:
            data.skipped += 1
            if len(data.examples) < EXAMPLES_KEPT:
                data.examples.append(f"{path}:{number}: {exc}")
            continue
        if since <= record.time <= until:
            data.records.append(record)
        else:
            data.outside += 1


# --- summary ---------------------------------------------------------------------------------


def _rms(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else math.nan


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f} s"


def _seconds(value: float) -> str:
    """An offset or jitter in the unit that reads best."""
    if not math.isfinite(value):
        return "-"
    magnitude = abs(value)
    if magnitude < 1e-3:
        return f"{value * 1e6:.1f} µs"
    if magnitude < 1.0:
        return f"{value * 1e3:.3f} ms"
    return f"{value:.6f} s"


def summary_rows(loop: SetData, peers: SetData) -> list[tuple[str, str]]:
    times = [r.time for r in loop.records] + [r.time for r in peers.records]
    rows: list[tuple[str, str]] = []
    if times:
        first, last = min(times), max(times)
        rows.append(("time span", f"{_utc(first)} to {_utc(last)} ({_duration(last - first)})"))
    if loop.records:
        offsets = [r.offset for r in loop.records]
        freqs = [r.frequency for r in loop.records]
        rows += [
            ("clock updates (loopstats lines)", str(len(loop.records))),
            ("RMS offset", _seconds(_rms(offsets))),
            ("max |offset|", _seconds(max(abs(x) for x in offsets))),
            ("frequency range", f"{min(freqs):+.3f} to {max(freqs):+.3f} ppm"),
            ("RMS jitter", _seconds(_rms([r.jitter for r in loop.records]))),
        ]
    for address, records in per_peer(peers.records).items():
        rms = _seconds(_rms([r.offset for r in records]))
        delay = _seconds(min(r.delay for r in records))
        rows.append((f"peer {address}", f"{len(records)} samples, RMS offset {rms}, "
                                        f"min delay {delay}"))
    for data in (loop, peers):
        rows.append((f"{data.name} files read", str(len(data.files))))
        if data.skipped:
            rows.append((f"{data.name} lines skipped (not in ntpd's format)", str(data.skipped)))
        if data.outside:
            rows.append((f"{data.name} lines outside --since/--until", str(data.outside)))
        for problem in data.unreadable:
            rows.append((f"{data.name} file not read", problem))
        for example in data.examples:
            rows.append((f"{data.name} skipped line", example))
    return rows


def per_peer(records: list[PeerStats]) -> dict[str, list[PeerStats]]:
    out: dict[str, list[PeerStats]] = {}
    for r in records:
        out.setdefault(r.address, []).append(r)
    return out


# --- drawing ---------------------------------------------------------------------------------


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(f"plotting needs matplotlib, which is not installed: {INSTALL_HINT}"
                        ) from None
    return plt


@dataclass(frozen=True, slots=True)
class Axis:
    """How to show a series: a factor and unit, and limits when a start-up transient would
    flatten the rest (the largest value far beyond the 75th percentile)."""

    factor: float
    unit: str
    limit: float | None  # in seconds, or None: show everything
    largest: float


def axis_for(values: list[float]) -> Axis:
    magnitudes = sorted(abs(v) for v in values if math.isfinite(v))
    largest = magnitudes[-1] if magnitudes else 0.0
    typical = magnitudes[int(0.75 * (len(magnitudes) - 1))] if len(magnitudes) >= 20 else 0.0
    limit = 6 * typical if typical > 0 and largest > 20 * typical else None
    peak = largest if limit is None else limit
    if peak < 1e-3:
        return Axis(1e6, "µs", limit, largest)
    if peak < 1.0:
        return Axis(1e3, "ms", limit, largest)
    return Axis(1.0, "s", limit, largest)


def _series(ax: Any, when: list[datetime.datetime], values: list[float], what: str,
            **style: Any) -> None:
    axis = axis_for(values)
    ax.plot(when, [v * axis.factor for v in values], linewidth=0.7, **style)
    ax.set_ylabel(f"{what} ({axis.unit})")
    if axis.limit is not None:
        shown = axis.limit * axis.factor
        low = -shown if min(values) < 0 else 0.0
        ax.set_ylim(low, shown)
        ax.set_title(f"clipped at {shown:.3g} {axis.unit}; the largest is "
                     f"{axis.largest * axis.factor:.3g} {axis.unit}", fontsize="small")


def _dates(records: list[Any]) -> list[datetime.datetime]:
    return [datetime.datetime.fromtimestamp(r.time, datetime.UTC) for r in records]


def _replace(outdir: str, name: str, write: Callable[[Any], None]) -> str:
    """Write OUTDIR/NAME atomically (a temporary file, then rename over; a symlink at NAME is
    replaced, never followed). `write` gets the file, opened in binary mode."""
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=outdir)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(temporary, 0o644)
        os.replace(temporary, os.path.join(outdir, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return name


def _save(plt: Any, fig: Any, outdir: str, name: str) -> str:
    try:
        return _replace(outdir, name, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)


def _figure(plt: Any, title: str, rows: int = 1) -> tuple[Any, Any]:
    fig, axes = plt.subplots(rows, 1, figsize=(10, 3.2 * rows + 0.6), sharex=True,
                             squeeze=False)
    fig.suptitle(title)
    for ax in axes[:, 0]:
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("time (UTC)")
    fig.autofmt_xdate()
    return fig, axes[:, 0]


def draw(plt: Any, loop: SetData, peers: SetData, outdir: str) -> list[tuple[str, str]]:
    """The pictures there is data for: [(file name, caption)]."""
    written: list[tuple[str, str]] = []
    if loop.records:
        when = _dates(loop.records)
        fig, (ax,) = _figure(plt, "clock offset (loopstats)")
        _series(ax, when, [r.offset for r in loop.records], "offset")
        written.append((_save(plt, fig, outdir, "offset.png"), "Clock offset"))

        fig, (ax,) = _figure(plt, "frequency (loopstats)")
        ax.plot(when, [r.frequency for r in loop.records], linewidth=0.7, color="tab:green")
        ax.set_ylabel("frequency (ppm)")
        written.append((_save(plt, fig, outdir, "frequency.png"), "Frequency"))

        fig, (top, bottom) = _figure(plt, "loop jitter and frequency wander (loopstats)", 2)
        _series(top, when, [r.jitter for r in loop.records], "jitter", color="tab:orange")
        bottom.plot(when, [r.wander for r in loop.records], linewidth=0.7, color="tab:purple")
        bottom.set_ylabel("wander (ppm)")
        written.append((_save(plt, fig, outdir, "jitter.png"), "Jitter and wander"))
    if peers.records:
        axis = axis_for([r.offset for r in peers.records])
        fig, (ax,) = _figure(plt, "offset of each source (peerstats)")
        for address, records in per_peer(peers.records).items():
            ax.plot(_dates(records), [r.offset * axis.factor for r in records], linewidth=0.7,
                    marker=".", markersize=2, label=address)
        ax.set_ylabel(f"offset ({axis.unit})")
        if axis.limit is not None:
            ax.set_ylim(-axis.limit * axis.factor, axis.limit * axis.factor)
        ax.legend(loc="best", fontsize="small")
        written.append((_save(plt, fig, outdir, "peer-offsets.png"), "Offset of each source"))
    return written


def write_html(outdir: str, statsdir: str, pictures: list[tuple[str, str]],
               rows: list[tuple[str, str]]) -> str:
    e = html.escape
    table = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    images = "\n".join(
        f'<figure><img src="{e(name)}" alt="{e(caption)}"><figcaption>{e(caption)}'
        "</figcaption></figure>" for name, caption in pictures)
    text = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>pyntpd statistics: {e(statsdir)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ text-align: left; padding: 0.2em 1em; border-bottom: 1px solid #ddd; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
<h1>Statistics from {e(statsdir)}</h1>
<p>Generated {e(_utc(time.time()))} by pyntpctl plot.</p>
<table>
{table}
</table>
{images}
</body>
</html>
"""
    return _replace(outdir, "index.html", lambda f: f.write(text.encode("utf-8")))


# --- the command -----------------------------------------------------------------------------


def parse_time(text: str) -> float:
    """Unix seconds, or an ISO 8601 UTC date/time (2026-11-26 or 2026-11-26T12:00:00)."""
    try:
        return float(text)
    except ValueError:
        pass
    for pattern in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return float(calendar.timegm(time.strptime(text.removesuffix("Z"), pattern)))
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(
        f"'{text}' is not a time: give Unix seconds or UTC as YYYY-MM-DD[THH:MM[:SS]]")


def _outdir(path: str) -> str:
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise PlotError(f"{path}: cannot create the output directory: {exc.strerror}") from None
    if not os.path.isdir(path):
        raise PlotError(f"{path}: the output path is not a directory")
    return path


def plot(statsdir: str, outdir: str, prefix: str = "", since: float = -math.inf,
         until: float = math.inf) -> tuple[list[str], list[tuple[str, str]]]:
    """Read, draw and write; (files written, summary rows). PlotError on bad input."""
    plt = _pyplot()
    if not os.path.isdir(statsdir):
        what = "not a directory" if os.path.exists(statsdir) else "no such directory"
        raise PlotError(f"{statsdir}: {what}")
    loop = read_set(statsdir, prefix + "loopstats", parse_loopstats, since, until)
    peers = read_set(statsdir, prefix + "peerstats", parse_peerstats, since, until)
    if not loop.files and not peers.files:
        problems = loop.unreadable + peers.unreadable
        detail = "; ".join(problems) if problems else "the directory holds none"
        raise PlotError(f"{statsdir}: no readable {prefix}loopstats or {prefix}peerstats "
                        f"files ({detail})")
    rows = summary_rows(loop, peers)
    if not loop.records and not peers.records:
        skipped = loop.skipped + peers.skipped
        outside = loop.outside + peers.outside
        raise PlotError(f"{statsdir}: no statistics lines to plot ({skipped} not in ntpd's "
                        f"format, {outside} outside --since/--until)"
                        + "".join(f"\n  {x}" for x in loop.examples + peers.examples))
    out = _outdir(outdir)
    pictures = draw(plt, loop, peers, out)
    page = write_html(out, statsdir, pictures, rows)
    return [name for name, _ in pictures] + [page], rows


def cmd_plot(args: argparse.Namespace) -> int:
    try:
        written, rows = plot(args.statsdir, args.output, args.prefix,
                             -math.inf if args.since is None else args.since,
                             math.inf if args.until is None else args.until)
    except PlotError as exc:
        print(f"pyntpctl plot: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"pyntpctl plot: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print(f"wrote {', '.join(written)} to {args.output}")
    return EXIT_OK


def register_plot(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plot", help="draw the statistics files (offset, frequency, jitter) as PNGs + HTML",
        description="Read the loopstats and peerstats files in STATSDIR (ntpd's format, all "
                    "generations) and write offset.png, frequency.png, jitter.png, "
                    "peer-offsets.png and index.html. Needs matplotlib: " + INSTALL_HINT)
    p.add_argument("statsdir", metavar="STATSDIR", help="the directory of the statistics files")
    p.add_argument("-o", "--output", metavar="OUTDIR", default="ntpplots",
                   help="where to write the pictures and index.html (default ./ntpplots; "
                        "created if missing)")
    p.add_argument("--since", type=parse_time, metavar="TIME",
                   help="only lines from TIME on (Unix s, or UTC YYYY-MM-DD[THH:MM[:SS]])")
    p.add_argument("--until", type=parse_time, metavar="TIME", help="only lines up to TIME")
    p.add_argument("--prefix", default="", metavar="P",
                   help="the files are named P+loopstats*, P+peerstats* (for 'filegen ... file')")
    p.set_defaults(func=cmd_plot)
