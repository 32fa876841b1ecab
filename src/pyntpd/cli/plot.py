"""`pyntpctl plot STATSDIR`: pictures of the statistics files, for people rather than scripts.

Reads every loopstats and peerstats file in STATSDIR (all generations: `loopstats.20261126`,
the bare link `loopstats`, `.gz` files from logrotate; a file reached under two names is read
once), in time order, and writes into OUTDIR:

    offset.png        the clock's offset over time (loopstats)
    frequency.png     the frequency correction over time (loopstats)
    jitter.png        the loop's jitter and the frequency wander (loopstats)
    peer-offsets.png  each source's offset over time, one panel per source (peerstats)
    index.html        the pictures and a summary table

An operator looks for the steady state: the warm-up (the start-up transient, told apart by
`steady_start`) is shaded and left out of the scales and of the summary's figures, which
say what period they cover; points beyond a panel's scale are drawn on its edge and counted.

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

STEADY_RUN = 5  # consecutive clock updates inside the steady band that end the warm-up
BAND_FACTOR = 3.0  # the steady band: this many times the later deviations' 95th percentile

# The selection field of the peer status word (ntpd's CTL_PST_SEL_*), as ntpq names it.
CONDITIONS = ("reject", "falsetick", "excess", "outlier", "candidate", "backup", "sys.peer",
              "pps.peer")


def _rms(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else math.nan


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[int(fraction * (len(ordered) - 1))] if ordered else math.nan


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
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


def settled_from(times: list[float], values: list[float]) -> float | None:
    """When one series has settled: the first of STEADY_RUN consecutive values within the
    steady band around the later half's median (BAND_FACTOR times the 95th percentile of
    the later half's deviations from it). The band comes from the run itself, so a WAN
    server's milliseconds and a LAN's microseconds are each judged by their own standard.
    None when there are too few values to tell or they never settle."""
    if len(values) < 2 * STEADY_RUN:
        return None
    later = values[len(values) // 2:]
    centre = _percentile(later, 0.5)
    band = BAND_FACTOR * _percentile([abs(v - centre) for v in later], 0.95)
    run = 0
    for i, value in enumerate(values):
        run = run + 1 if abs(value - centre) <= band else 0
        if run == STEADY_RUN:
            return times[i - STEADY_RUN + 1]
    return None


def steady_start(loop: list[LoopStats]) -> float | None:
    """The end of the warm-up: when the offset, the frequency, the jitter and the wander
    have all settled (the frequency and wander take longer than the offset after a cold
    start). None when that cannot be told."""
    times = [r.time for r in loop]
    found = [settled_from(times, [getattr(r, name) for r in loop])
             for name in ("offset", "frequency", "jitter", "wander")]
    return None if None in found else max(t for t in found if t is not None)


def condition_shares(records: list[PeerStats]) -> str:
    """How often the source was in each condition, most frequent first."""
    counts: dict[str, int] = {}
    for r in records:
        name = CONDITIONS[(r.status >> 8) & 7]
        counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {100 * n / len(records):.0f}%" for name, n in ranked)


def summary_rows(loop: SetData, peers: SetData) -> list[tuple[str, str]]:
    times = [r.time for r in loop.records] + [r.time for r in peers.records]
    rows: list[tuple[str, str]] = []
    steady = steady_start(loop.records)
    if times:
        first, last = min(times), max(times)
        rows.append(("time span", f"{_utc(first)} to {_utc(last)} ({_duration(last - first)})"))
        if steady is None:
            rows.append(("warm-up", "not told apart (too few clock updates, or never "
                                    "settled): the figures below cover the whole span"))
        else:
            rows.append(("warm-up", f"the first {_duration(steady - first)} (to "
                                    f"{_utc(steady)}), shaded in the plots and left out "
                                    "of the figures below"))
            rows.append(("steady state", f"{_utc(steady)} to {_utc(last)} "
                                         f"({_duration(last - steady)})"))
    since = -math.inf if steady is None else steady
    if loop.records:
        settled = [r for r in loop.records if r.time >= since]
        offsets = [r.offset for r in settled]
        freqs = [r.frequency for r in settled]
        rows += [
            ("clock updates (loopstats lines)", str(len(loop.records))),
            ("RMS offset", _seconds(_rms(offsets))),
            ("max |offset|", _seconds(max(abs(x) for x in offsets))),
            ("frequency range", f"{min(freqs):+.3f} to {max(freqs):+.3f} ppm"),
            ("RMS jitter", _seconds(_rms([r.jitter for r in settled]))),
        ]
        if steady is not None and steady > loop.records[0].time:
            early = [abs(r.offset) for r in loop.records if r.time < steady]
            rows.append(("max |offset| in the warm-up", _seconds(max(early))))
    for address, records in per_peer(peers.records).items():
        settled_peer = [r for r in records if r.time >= since] or records
        offsets = [r.offset for r in settled_peer]
        # Median and range, not an RMS: one step of a falseticker would make an RMS of
        # seconds that says nothing about either of its levels.
        jitter = _percentile([r.jitter for r in settled_peer], 0.5)
        delay = _seconds(min(r.delay for r in records))
        rows.append((f"peer {address}", f"{len(records)} samples; median offset "
                     f"{_seconds(_percentile(offsets, 0.5))}, offsets "
                     f"{_seconds(min(offsets))} to {_seconds(max(offsets))}, median jitter "
                     f"{_seconds(jitter)}, min delay {delay}; "
                     f"{condition_shares(settled_peer)}"))
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
class Scale:
    """How to show a series: a factor and unit for the values, and the y limits (in the
    shown unit) that fit its steady state. Values outside are drawn at the edge and said."""

    factor: float
    unit: str
    low: float
    high: float


def unit_for(peak: float, seconds: bool) -> tuple[float, str]:
    if not seconds:
        return 1.0, "ppm"
    if peak < 1e-3:
        return 1e6, "µs"
    if peak < 1.0:
        return 1e3, "ms"
    return 1.0, "s"


def scale_for(steady: list[float], seconds: bool = True) -> Scale:
    """Limits that fit the steady values; a lone spike far beyond the rest (more than 20
    times the 75th percentile of the magnitudes) is left beyond the edge, not scaled to."""
    finite = [v for v in steady if math.isfinite(v)] or [0.0]
    low, high = min(finite), max(finite)
    if seconds:
        magnitudes = [abs(v) for v in finite]
        typical = _percentile(magnitudes, 0.75) if len(magnitudes) >= 20 else 0.0
        if typical > 0 and max(magnitudes) > 20 * typical:
            low, high = max(low, -6 * typical), min(high, 6 * typical)
    pad = 0.1 * (high - low) or 0.1 * abs(high) or 1e-9
    low, high = low - pad, high + pad
    factor, unit = unit_for(max(abs(low), abs(high)), seconds)
    return Scale(factor, unit, low * factor, high * factor)


def _series(ax: Any, when: list[datetime.datetime], values: list[float], what: str,
            steady_from: float | None, times: list[float], seconds: bool = True,
            **style: Any) -> None:
    """One series at the scale of its steady state; what lies beyond it (the warm-up, a
    spike, a step) is drawn as triangles on the edge and counted in the panel's title."""
    steady = [v for v, t in zip(values, times, strict=True)
              if steady_from is None or t >= steady_from]
    scale = scale_for(steady or values, seconds)
    shown = [v * scale.factor for v in values]
    ax.plot(when, shown, linewidth=0.7, marker=".", markersize=2, **style)
    ax.set_ylim(scale.low, scale.high)
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # -100.2, not 0.2 - 1e2
    ax.set_ylabel(f"{what} ({scale.unit})")
    above = [(w, v) for w, v in zip(when, shown, strict=True) if v > scale.high]
    below = [(w, v) for w, v in zip(when, shown, strict=True) if v < scale.low]
    if above:
        ax.plot([w for w, _ in above], [scale.high] * len(above), "^", color="tab:red",
                markersize=4, clip_on=False)
    if below:
        ax.plot([w for w, _ in below], [scale.low] * len(below), "v", color="tab:red",
                markersize=4, clip_on=False)
    if above or below:
        extremes = [v / scale.factor for _, v in above + below]
        say = _seconds if seconds else (lambda v: f"{v:+.3f} ppm")
        ax.set_title(f"{len(extremes)} of {len(values)} points beyond the scale (red ▲▼): "
                     f"{say(min(extremes))} to {say(max(extremes))}",
                     fontsize="small", loc="right")


def _mark_warmup(axes: Iterable[Any], first: float, steady_from: float | None) -> None:
    if steady_from is None or steady_from <= first:
        return
    start, end = (datetime.datetime.fromtimestamp(t, datetime.UTC) for t in (first, steady_from))
    for i, ax in enumerate(axes):
        ax.axvspan(start, end, color="0.85", zorder=0,
                   label="warm-up (not scaled to)" if i == 0 else None)


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
        fig.tight_layout()
        return _replace(outdir, name, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)


def _figure(plt: Any, title: str, rows: int = 1, height: float = 3.2) -> tuple[Any, Any]:
    fig, axes = plt.subplots(rows, 1, figsize=(10, height * rows + 0.8), sharex=True,
                             squeeze=False)
    fig.suptitle(title)
    for ax in axes[:, 0]:
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("time (UTC)")
    fig.autofmt_xdate()
    return fig, axes[:, 0]


def _legend_if_marked(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize="small")


def draw(plt: Any, loop: SetData, peers: SetData, outdir: str) -> list[tuple[str, str]]:
    """The pictures there is data for: [(file name, caption)]. Each series is scaled to its
    steady state, the warm-up shaded, and whatever lies beyond the scale marked and said."""
    written: list[tuple[str, str]] = []
    steady = steady_start(loop.records)
    times = [r.time for r in loop.records] + [r.time for r in peers.records]
    first = min(times) if times else 0.0
    if loop.records:
        when = _dates(loop.records)
        t = [r.time for r in loop.records]
        fig, (ax,) = _figure(plt, "clock offset, true − local (loopstats)")
        _mark_warmup([ax], first, steady)
        _series(ax, when, [r.offset for r in loop.records], "offset", steady, t)
        _legend_if_marked(ax)
        written.append((_save(plt, fig, outdir, "offset.png"), "Clock offset"))

        fig, (ax,) = _figure(plt, "frequency correction (loopstats)")
        _mark_warmup([ax], first, steady)
        _series(ax, when, [r.frequency for r in loop.records], "frequency", steady, t,
                seconds=False, color="tab:green")
        _legend_if_marked(ax)
        written.append((_save(plt, fig, outdir, "frequency.png"), "Frequency"))

        fig, (top, bottom) = _figure(plt, "loop jitter and frequency wander (loopstats)", 2)
        _mark_warmup([top, bottom], first, steady)
        _series(top, when, [r.jitter for r in loop.records], "jitter", steady, t,
                color="tab:orange")
        _series(bottom, when, [r.wander for r in loop.records], "wander", steady, t,
                seconds=False, color="tab:purple")
        _legend_if_marked(top)
        written.append((_save(plt, fig, outdir, "jitter.png"), "Jitter and wander"))
    if peers.records:
        # One panel per source at its own scale: a falseticker seconds away and the honest
        # sources microseconds apart are all readable, none off the plot.
        sources = sorted(per_peer(peers.records).items())
        fig, axes = _figure(plt, "offset of each source, source − local (peerstats)",
                            len(sources), height=2.0)
        _mark_warmup(axes, first, steady)
        for ax, (address, records) in zip(axes, sources, strict=True):
            _series(ax, _dates(records), [r.offset for r in records], "offset", steady,
                    [r.time for r in records])
            settled = [r for r in records if steady is None or r.time >= steady] or records
            offsets = [r.offset for r in settled]
            period = "whole span" if steady is None else "after the warm-up"
            ax.set_title(f"{address}: {condition_shares(settled)}; {period} "
                         f"{_seconds(min(offsets))} to {_seconds(max(offsets))}",
                         fontsize="small", loc="left")
        _legend_if_marked(axes[0])
        written.append((_save(plt, fig, outdir, "peer-offsets.png"), "Offset of each source"))
    return written


def draw_simulation(path: str, title: str, offsets: list[float], stats_from: float) -> None:
    """`pyntpctl simulate --plot`: the true offset (one value a simulated second) at the
    scale of the statistics window, the warm-up before it shaded, and what lies beyond the
    scale marked and said. PlotError without matplotlib."""
    plt = _pyplot()
    hours = [(i + 1) / 3600 for i in range(len(offsets))]
    start = int(stats_from)
    steady = offsets[start:] or offsets
    scale = scale_for(steady)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.grid(True, alpha=0.3)
    ax.axvspan(0, stats_from / 3600, color="0.85", zorder=0,
               label=f"warm-up: the first {_duration(stats_from)}, not in the statistics")
    shown = [x * scale.factor for x in offsets]
    ax.plot(hours, shown, linewidth=0.5)
    ax.set_ylim(scale.low, scale.high)
    beyond = [(h, v) for h, v in zip(hours, shown, strict=True)
              if not scale.low <= v <= scale.high]
    if beyond:
        ax.plot([h for h, _ in beyond],
                [scale.high if v > scale.high else scale.low for _, v in beyond],
                "|", color="tab:red", markersize=6, clip_on=False,
                label=f"{len(beyond)} s beyond the scale, "
                      f"{_seconds(min(v for _, v in beyond) / scale.factor)} to "
                      f"{_seconds(max(v for _, v in beyond) / scale.factor)}")
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel(f"offset, local − true ({scale.unit})")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


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
