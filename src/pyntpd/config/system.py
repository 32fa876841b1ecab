"""File names, keys, statistics and the system knobs (`tos`, `tinker`, `enable`, `discard`,
`mru`).

These lines carry several settings each, so one bad word never costs the others: a value
ntpd clamps is clamped the same way with a warning, a value outside what pyntpd can use is
brought to its nearest usable value with a warning, and a word that is not a number or not
an option is an error that drops only that word (and its value) while the rest applies.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .context import Context, KeyRef
from .diagnostics import Location
from .lexer import Token
from .model import STATISTICS_NAMES, FilegenConfig, FilegenType
from .refused import MODE7_FIX, MODE7_WHY

INT_MAX = 2**31 - 1
BIG = 1e9  # s or PPM: far beyond any meaningful tinker/tos value, still a finite float


@dataclass(frozen=True, slots=True)
class Option:
    kind: type  # int or float
    lo: float
    hi: float
    hint: str | None = None
    ntpd: bool = False  # ntpd 4.2.8 clamps to the same range
    ignore: bool = False  # out of range: ignored (as ntpd does) rather than clamped


_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _number(ctx: Context, tok: Token, name: str, kind: type) -> int | float | None:
    text = tok.text
    if not _NUMBER.fullmatch(text) or (kind is int and not re.fullmatch(r"[+-]?[0-9]+", text)):
        what = "a whole number" if kind is int and _NUMBER.fullmatch(text) else "a number"
        ctx.error(tok, f"{name} must be {what}, not '{text}'; ignored")
        return None
    value = int(text) if kind is int else float(text)
    if not math.isfinite(value):
        ctx.error(tok, f"{name} must be a number, not '{text}'; ignored")
        return None
    return value


def _in_range(ctx: Context, tok: Token, name: str, opt: Option,
              value: int | float) -> int | float | None:
    """The value to use: as given, clamped (with a warning), or None (ignored)."""
    if opt.lo <= value <= opt.hi:
        return value
    limit = opt.kind(opt.lo if value < opt.lo else opt.hi)
    where = f"{name} {value:g} is {'below' if value < opt.lo else 'above'} {limit:g}"
    as_ntpd = ", as ntpd does" if opt.ntpd else ""
    if opt.ignore:
        ctx.warning(tok, f"{where}; ignored{as_ntpd}", opt.hint)
        return None
    ctx.warning(tok, f"{where}; using {limit:g}{as_ntpd}", opt.hint)
    return limit


def _options(
    ctx: Context,
    head: Token,
    args: list[Token],
    table: dict[str, Option],
    ignored: dict[str, str] | None = None,
) -> list[tuple[str, Token, int | float]]:
    """Parse `name value` pairs; returns the usable ones in order, for last-one-wins
    semantics. A bad pair is reported and left out; the others still count."""
    ignored = ignored or {}
    out: list[tuple[str, Token, int | float]] = []
    if not args:
        ctx.error(ctx.after(head), f"missing option after '{head.text}'")
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok.text in ignored:
            ctx.need(args, i, tok, tok.text)
            i += 1
            ctx.warning(tok, f"'{head.text} {tok.text}' ignored: {ignored[tok.text]}")
            continue
        opt = table.get(tok.text)
        if opt is None:
            ctx.unknown(tok, "option", [*table, *ignored], f"for '{head.text}'")
            if i < len(args) and _NUMBER.fullmatch(args[i].text):
                i += 1  # its value goes with it
            continue
        value_tok = ctx.need(args, i, tok, tok.text)
        i += 1
        if value_tok is None:
            continue
        value = _number(ctx, value_tok, tok.text, opt.kind)
        if value is not None:
            value = _in_range(ctx, value_tok, tok.text, opt, value)
        if value is not None:
            out.append((tok.text, tok, value))
    return out


# -- files --------------------------------------------------------------------------------


def _single_path(ctx: Context, head: Token, args: list[Token], what: str) -> str | None:
    tok = ctx.need(args, 0, head, what)
    if tok is None:
        return None
    return ctx.path_value(tok, what)


def handle_path(ctx: Context, head: Token, args: list[Token]) -> None:
    """statsdir, logfile, pidfile, ntpsigndsocket."""
    name = head.text
    what = "directory" if name in ("statsdir", "ntpsigndsocket") else "file name"
    path = _single_path(ctx, head, args, what)
    ctx.no_more(args, 1, name)
    if path is not None and ctx.line_ok:
        ctx.b.scalars[name] = path
        if name == "statsdir":
            ctx.b.scalars["statsdir_location"] = head.loc


def handle_driftfile(ctx: Context, head: Token, args: list[Token]) -> None:
    path = _single_path(ctx, head, args, "file name")
    if len(args) > 1:
        if ctx.float_value(args[1], "wander threshold", 0.0, 1e6) is not None:
            ctx.warning(args[1], "driftfile wander threshold is not supported; ignored")
        ctx.no_more(args, 2, "driftfile")
    if path is not None and ctx.line_ok:
        ctx.b.scalars["driftfile"] = path


def handle_leapfile(ctx: Context, head: Token, args: list[Token]) -> None:
    path = _single_path(ctx, head, args, "file name")
    checkhash = True
    if len(args) > 1:
        if args[1].text in ("checkhash", "ignorehash"):
            checkhash = args[1].text == "checkhash"
        else:
            ctx.unknown(args[1], "leapfile option", ["checkhash", "ignorehash"])
        ctx.no_more(args, 2, "leapfile")
    if path is not None and ctx.line_ok:
        ctx.b.scalars["leapfile"] = path
        ctx.b.scalars["leapfile_checkhash"] = checkhash


def handle_keys(ctx: Context, head: Token, args: list[Token]) -> None:
    path = _single_path(ctx, head, args, "file name")
    ctx.no_more(args, 1, "keys")
    if path is not None and ctx.line_ok:
        ctx.b.scalars["keys_file"] = path
        ctx.b.keys_token = args[0]


# -- keys ---------------------------------------------------------------------------------

_KEY_PIECES = re.compile(r"\(|\)|\.\.\.|[^().]+|\.")


def _key_pieces(args: list[Token]) -> list[Token]:
    """Split tokens so that '(1', '...', '5)' and '(1...5)' all read as ( 1 ... 5 )."""
    out: list[Token] = []
    for tok in args:
        if tok.quoted:
            out.append(tok)
            continue
        for m in _KEY_PIECES.finditer(tok.text):
            loc = Location(tok.loc.file, tok.loc.line, tok.loc.col + m.start())
            out.append(Token(m.group(), loc))
    return out


def handle_trustedkey(ctx: Context, head: Token, args: list[Token]) -> None:
    pieces = _key_pieces(args)
    found: list[tuple[int, int, Token]] = []  # (first, last, where)
    if not pieces:
        ctx.error(ctx.after(head), "missing key id after 'trustedkey'")
    j = 0
    while j < len(pieces):
        tok = pieces[j]
        if tok.text == "(":
            parts = pieces[j + 1 : j + 5]
            texts = [p.text for p in parts]
            if len(parts) < 4 or texts[1] != "..." or texts[3] != ")":
                ctx.error(tok, "key range must be written '(FIRST ... LAST)'")
                return
            lo = ctx.int_value(parts[0], "key id", 1, 65535)
            hi = ctx.int_value(parts[2], "key id", 1, 65535)
            if lo is not None and hi is not None:
                if lo > hi:
                    ctx.error(tok, f"key range ({lo} ... {hi}) is empty")
                found.append((lo, hi, parts[0]))
            j += 5
            continue
        if re.fullmatch(r"[0-9]+-[0-9]+", tok.text):
            ctx.error(tok, f"'{tok.text}' is not ntpd syntax", "write ranges as '(1 ... 5)'")
        else:
            key_id = ctx.int_value(tok, "key id", 1, 65535)
            if key_id is not None:
                found.append((key_id, key_id, tok))
        j += 1
    if ctx.line_ok:
        for lo, hi, tok in found:
            ctx.b.trusted_keys.update(range(lo, hi + 1))
            # A range is not expected to be fully populated: only single ids are checked
            # against the keys file, but a range still makes the keys file necessary.
            use = "trustedkey" if lo == hi else "trustedkey range"
            ctx.b.key_refs.append(KeyRef(lo, tok, use))


def handle_single_key(ctx: Context, head: Token, args: list[Token]) -> None:
    """requestkey, controlkey."""
    key_id = ctx.int_arg(args, 0, head, "key id", 1, 65535)
    ctx.no_more(args, 1, head.text)
    if key_id is None or not ctx.line_ok:
        return
    if head.text == "requestkey":
        ctx.warning(head, f"'requestkey' has no effect: {MODE7_WHY}", MODE7_FIX)
        ctx.b.scalars["request_key"] = key_id
    else:
        ctx.b.scalars["control_key"] = key_id
    ctx.b.key_refs.append(KeyRef(key_id, args[0], head.text))


# -- statistics ---------------------------------------------------------------------------

FILEGEN_TYPES: dict[str, FilegenType] = {
    "none": "none",
    "pid": "pid",
    "day": "day",
    "week": "week",
    "month": "month",
    "year": "year",
    "age": "age",
}
FILEGEN_OPTIONS = ["file", "type", "link", "nolink", "enable", "disable"]


def _stats_name(ctx: Context, tok: Token) -> bool:
    if tok.text in STATISTICS_NAMES:
        return True
    ctx.unknown(tok, "statistics name", STATISTICS_NAMES)
    return False


def handle_statistics(ctx: Context, head: Token, args: list[Token]) -> None:
    if not args:
        ctx.error(ctx.after(head), "missing statistics name after 'statistics'")
    for name in [tok.text for tok in args if _stats_name(ctx, tok)]:
        if name not in ctx.b.statistics:
            ctx.b.statistics.append(name)


def handle_filegen(ctx: Context, head: Token, args: list[Token]) -> None:
    name_tok = ctx.need(args, 0, head, "statistics name")
    if name_tok is None or not _stats_name(ctx, name_tok):
        return
    # As in ntpd, a later line for the same set starts from what the earlier ones said.
    previous = next((fg for fg in reversed(ctx.b.filegens) if fg.name == name_tok.text),
                    FilegenConfig(name_tok.text))
    file = previous.file
    ftype = previous.type
    link = previous.link
    enabled = previous.enabled
    i = 1
    while i < len(args):
        tok = args[i]
        i += 1
        if tok.text == "file":
            f = ctx.need(args, i, tok, "file name")
            i += 1
            if f is not None:
                if not f.text or "/" in f.text or f.text in (".", ".."):
                    ctx.error(
                        f,
                        f"filegen file '{f.text}' must be a plain file name",
                        "set the directory with 'statsdir'",
                    )
                else:
                    file = f.text
        elif tok.text == "type":
            t = ctx.need(args, i, tok, "type")
            i += 1
            if t is not None:
                if t.text in FILEGEN_TYPES:
                    ftype = FILEGEN_TYPES[t.text]
                else:
                    ctx.unknown(t, "filegen type", FILEGEN_TYPES)
        elif tok.text in ("link", "nolink"):
            link = tok.text == "link"
        elif tok.text in ("enable", "disable"):
            enabled = tok.text == "enable"
        else:
            ctx.unknown(tok, "option", FILEGEN_OPTIONS, "for 'filegen'")
            break
    if ctx.line_ok:
        ctx.b.filegens.append(
            FilegenConfig(name_tok.text, file, ftype, link, enabled, name_tok.loc)
        )


# -- tos, tinker, discard, mru ------------------------------------------------------------

TOS_OPTIONS = {
    "minsane": Option(int, 0, INT_MAX, ntpd=True),
    "minclock": Option(int, 1, INT_MAX, ntpd=True),
    "maxclock": Option(int, 1, INT_MAX, ntpd=True),
    "maxdist": Option(float, 0.001, BIG, "with a smaller maxdist no source is ever usable"),
    "mindist": Option(float, 0.0, BIG),
    "orphan": Option(int, 1, 16, "16 turns orphan mode off"),
    "orphanwait": Option(int, 0, INT_MAX),
    "cohort": Option(int, 0, 1),
    "floor": Option(int, 0, 15, ntpd=True),
    "ceiling": Option(int, 0, 15, ntpd=True),
    "beacon": Option(int, 0, INT_MAX),
}
TOS_IGNORED = {
    "basedate": "pyntpd derives the era from its build",
    "bcpollbstep": "pyntpd always waits one poll interval before it believes a broadcaster's "
    "time going backwards",
}
_TOS_DEFAULTS = {"minclock": 3, "maxclock": 10, "floor": 0, "ceiling": 15}


def handle_tos(ctx: Context, head: Token, args: list[Token]) -> None:
    values = _options(ctx, head, args, TOS_OPTIONS, TOS_IGNORED)
    ctx.b.tos.update({n: v for n, _t, v in values})
    merged = {**_TOS_DEFAULTS, **ctx.b.tos}
    # ntpd logs these and keeps the values ("daemon will not operate properly").
    for low, high in (("minclock", "maxclock"), ("floor", "ceiling")):
        if merged[low] > merged[high]:
            ctx.warning(head, f"{low} {merged[low]} is greater than {high} {merged[high]}",
                        "no source can then be selected")


TINKER_OPTIONS = {
    "step": Option(float, 0.0, BIG, "0 disables stepping"),
    "stepback": Option(float, 0.0, BIG),
    "stepfwd": Option(float, 0.0, BIG),
    "stepout": Option(float, 0.0, BIG),
    "panic": Option(float, 0.0, BIG, "0 disables the sanity limit"),
    "allan": Option(float, -BIG, BIG),
    "dispersion": Option(float, 0.0, BIG),
    "huffpuff": Option(float, 900.0, BIG, "the huff-n'-puff span is at least 900 s", ntpd=True),
    "freq": Option(float, -500.0, 500.0, "freq is in PPM", ntpd=True),
}
TINKER_IGNORED = {"tick": "pyntpd uses the kernel's tick"}
# Recorded, but the discipline has nothing they could set: its filter estimates the
# oscillator's stability and the sources' dispersion itself.
TINKER_NO_EFFECT = {
    "allan": "pyntpd's filter estimates the Allan intercept itself",
    "dispersion": "pyntpd uses RFC 5905's 15 PPM dispersion rate",
    "huffpuff": "pyntpd has no huff-n'-puff filter; its delay-bounded filter handles "
                "asymmetric congestion",
}
ALLAN_BYTE = 256  # ntpd 4.2.8 keeps allan in a u_char


def handle_tinker(ctx: Context, head: Token, args: list[Token]) -> None:
    for name, tok, value in _options(ctx, head, args, TINKER_OPTIONS, TINKER_IGNORED):
        if name == "allan":
            kept = int(value) % ALLAN_BYTE
            if kept != value:
                ctx.warning(tok, f"allan {value:g} does not fit ntpd 4.2.8's byte (log2 s); "
                            f"ntpd keeps {kept}",
                            "ntpd 4.2.6 documented seconds; 4.2.8 takes log2 seconds "
                            "(default 11 = 2048 s)")
            value = kept
        if name in TINKER_NO_EFFECT:
            ctx.warning(tok, f"'tinker {name}' has no effect: {TINKER_NO_EFFECT[name]}")
        if name == "panic" and value == 0:
            ctx.warning(
                tok,
                "'tinker panic 0' disables the 1000 s sanity limit: a single bad source can "
                "then set the clock to any time",
            )
        ctx.b.tinker[name] = int(value) if name == "allan" else float(value)


DISCARD_OPTIONS = {
    "average": Option(int, 0, 255, "average is log2 seconds (3 = 8 s)", ntpd=True,
                      ignore=True),
    "minimum": Option(int, 0, INT_MAX, "minimum is in seconds"),
    "monitor": Option(int, 0, INT_MAX),
}


def handle_discard(ctx: Context, head: Token, args: list[Token]) -> None:
    values = _options(ctx, head, args, DISCARD_OPTIONS)
    ctx.b.discard.update({n: int(v) for n, _t, v in values})


MRU_OPTIONS = {
    name: Option(int, 0, INT_MAX, ntpd=True, ignore=True)
    for name in ("mindepth", "initalloc", "initmem", "incalloc", "incmem")
}
# ntpd takes a negative maxdepth/maxmem as "no limit"; pyntpd's list is always bounded.
MRU_OPTIONS |= {
    name: Option(int, 0, INT_MAX, "pyntpd keeps the list bounded", ignore=True)
    for name in ("maxdepth", "maxmem")
}
MRU_OPTIONS["maxage"] = Option(int, 0, INT_MAX)
# Pairs that set the same limit in different units: the last one written wins.
MRU_PARTNER = {
    "maxdepth": "maxmem",
    "maxmem": "maxdepth",
    "initalloc": "initmem",
    "initmem": "initalloc",
    "incalloc": "incmem",
    "incmem": "incalloc",
}


def handle_mru(ctx: Context, head: Token, args: list[Token]) -> None:
    for name, _tok, value in _options(ctx, head, args, MRU_OPTIONS):
        ctx.b.mru[name] = int(value)
        if name in MRU_PARTNER:
            ctx.b.mru[MRU_PARTNER[name]] = None


# -- enable / disable ---------------------------------------------------------------------

SYSTEM_FLAGS = (
    "auth",
    "bclient",
    "calibrate",
    "kernel",
    "monitor",
    "ntp",
    "stats",
    "mode7",
    "peer_clear_digest_early",
    "unpeer_crypto_early",
    "unpeer_crypto_nak_early",
    "unpeer_digest_early",
)


def handle_enable(ctx: Context, head: Token, args: list[Token]) -> None:
    enable = head.text == "enable"
    if not args:
        ctx.error(ctx.after(head), f"missing flag after '{head.text}'")
    changes: dict[str, bool] = {}
    for tok in args:
        name = tok.text
        if name not in SYSTEM_FLAGS:
            ctx.unknown(tok, "flag", SYSTEM_FLAGS, f"for '{head.text}'")
            continue
        if enable and name == "mode7":
            ctx.error(tok, f"'enable mode7' is refused: {MODE7_WHY}", MODE7_FIX)
            continue
        if enable and name == "bclient":
            ctx.b.cast.client_token = tok  # checked with the keys (config/broadcast)
        if not enable and name == "auth":
            ctx.warning(
                tok,
                "'disable auth' does not weaken pyntpd: unauthenticated packets never "
                "create associations",
            )
        changes[name] = enable
    ctx.b.flags.update(changes)
