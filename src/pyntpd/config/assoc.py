"""`server`, `pool`, `peer`, `unpeer`/`unconfig` and `fudge`: time sources.

Host names are only syntax-checked here. ntpd resolves them at start-up and gives up on a
name that fails; pyntpd leaves them to the daemon, which retries, so a DNS outage at boot
does not silently leave a server without sources.

Numbers ntpd accepts and clamps (minpoll, maxpoll, version) are clamped the same way, with a
warning saying so; a word ntpd does not know drops the line, as it does in ntpd, because
what follows it could be meant for it (a misspelt `key` would otherwise leave the server
polled without authentication).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

from . import refused
from .context import Context, Fudge, KeyRef
from .lexer import Token
from .model import (
    AF_INET,
    AF_INET6,
    REFCLOCK_DRIVERS,
    IPAddress,
    LocalClock,
    RefclockConfig,
    ServerConfig,
    ServerKind,
)

# ntpd 4.2.8's NTP_MINPOLL/NTP_MAXPOLL and its defaults (ntp.h).
POLL_MIN, POLL_MAX = 3, 17
DEFAULT_MINPOLL, DEFAULT_MAXPOLL = 6, 10
# ntpd's parser resets a minpoll above a byte to NTP_MINPOLL rather than clamping it down.
MINPOLL_BYTE = 255
KEY_MAX = 65535  # ntpd's NTP_MAXKEY
VERSION_BYTE = 255  # ntpd refuses `version` values that do not fit below this

FLAG_OPTIONS = ("prefer", "iburst", "burst", "noselect", "true", "nts", "xleave")
VALUE_OPTIONS = ("minpoll", "maxpoll", "key", "version", "port", "ntsport")
# ntpd options pyntpd does not implement; accepted so old files still load.
IGNORED_FLAGS = {
    "preempt": "pyntpd does not demobilise preemptable associations",
    "xmtnonce": "pyntpd's requests always carry a random transmit timestamp",
}
IGNORED_VALUES = {
    "ttl": "ttl only matters for manycast, which pyntpd does not support",
    "mode": "mode only matters for reference clock drivers",
}
AUTOKEY_OPTIONS = ("autokey", "ident")
SERVER_OPTIONS = [*FLAG_OPTIONS, *VALUE_OPTIONS, *IGNORED_FLAGS, *IGNORED_VALUES,
                  *AUTOKEY_OPTIONS]
# On a reference clock line ntpd's grammar takes every server option; these have no effect
# on a reference clock (its samples are its own, not a network exchange).
REFCLOCK_NO_EFFECT_FLAGS = ("iburst", "burst", "xleave", "preempt", "xmtnonce")
REFCLOCK_NO_EFFECT_VALUES = ("version", "key")
REFCLOCK_OPTIONS = ["prefer", "noselect", "true", "minpoll", "maxpoll", "mode",
                    *REFCLOCK_NO_EFFECT_FLAGS, *REFCLOCK_NO_EFFECT_VALUES]
# Drivers ntpd builds with --enable-all-clocks that pyntpd does not: what to use instead.
KERNEL_PPS = 4  # fudge flag3 of the NMEA and PPS drivers
REFCLOCK_ALTERNATIVE = (
    "pyntpd builds LOCAL (127.127.1.u), NMEA (127.127.20.u), PPS (127.127.22.u), "
    "SHM (127.127.28.u) and GPSD_JSON (127.127.46.u): "
    "let gpsd read the receiver and use 'server 127.127.28.u' (its shared memory) or "
    "'server 127.127.46.u' (its JSON socket)")
FUDGE_OPTIONS = ["stratum", "refid", "time1", "time2", "flag1", "flag2", "flag3", "flag4",
                 "minjitter", "abbrev"]
FUDGE_STRATUM_MAX = 16  # ntpd's grammar: 0..16; other values are ignored

_REFCLOCK = re.compile(r"127\.127\.([0-9]{1,3})\.([0-9]{1,3})")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_NUMERIC = re.compile(r"[0-9.]+")
_WIDE = (-(2**31), 2**31 - 1)  # what ntpd's parser takes as an integer

_KINDS: dict[str, ServerKind] = {"server": "server", "pool": "pool", "peer": "peer"}

PEER_AS_SERVER = (
    "'peer' without 'key': polled as 'server' (client mode), as ntpsec does; in symmetric "
    "mode a forged packet from the peer's address could set this clock (CVE-2016-1549 class)"
)
PEER_AS_SERVER_HINT = "add 'key N' with a trusted key to keep symmetric mode"


def unbracket(ctx: Context, tok: Token) -> Token:
    """ntpd takes `[2001:db8::1]` as well as `2001:db8::1`; anything after the `]` other
    than a `/PREFIX` is ignored, as ntpd ignores it."""
    text = tok.text
    if not text.startswith("["):
        return tok
    end = text.find("]")
    if end < 0:
        return tok  # not an address: the caller reports it
    inner, rest = text[1:end], text[end + 1:]
    if rest and not rest.startswith("/"):
        ctx.warning(tok, f"'{rest}' after ']' is ignored, as ntpd ignores it")
        rest = ""
    return Token(inner + rest, tok.loc, tok.quoted)


def parse_address(
    ctx: Context, tok: Token, family: int | None, *, unicast: bool
) -> tuple[IPAddress | None, bool]:
    """Check an address or host name. Returns (literal address or None, ok)."""
    text = tok.text
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        addr = None
    if addr is not None:
        fam = AF_INET if addr.version == 4 else AF_INET6
        if family is not None and family != fam:
            flag = "-4" if family == AF_INET else "-6"
            ctx.error(tok, f"'{text}' is an IPv{addr.version} address but '{flag}' was given")
            return None, False
        if unicast and (addr.is_multicast or addr.is_unspecified or text == "255.255.255.255"):
            ctx.error(
                tok,
                f"'{text}' is not a unicast address",
                "broadcast, multicast and manycast modes are not supported; use a server's address",
            )
            return None, False
        return addr, True
    if ":" in text or _NUMERIC.fullmatch(text) or "[" in text or "]" in text:
        kind = "IPv6" if ":" in text else "IPv4"
        ctx.error(tok, f"'{text}' is not a valid {kind} address")
        return None, False
    if not is_host_name(text):
        hint = None
        if not text.isascii():
            hint = "write internationalised names in their ASCII (xn--) form"
        ctx.error(tok, f"'{text}' is not a valid host name or address", hint)
        return None, False
    return None, True


def is_host_name(text: str) -> bool:
    name = text.removesuffix(".")
    if not name or len(name) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


def _family_flags(ctx: Context, args: list[Token], i: int) -> tuple[int | None, int]:
    family: int | None = None
    while i < len(args) and args[i].text in ("-4", "-6"):
        new = AF_INET if args[i].text == "-4" else AF_INET6
        if family is not None and family != new:
            ctx.error(args[i], "'-4' and '-6' cannot both be given")
        family = new
        i += 1
    return family, i


def clamp_polls(
    ctx: Context,
    head: Token,
    minpoll: tuple[Token, int] | None,
    maxpoll: tuple[Token, int] | None,
) -> tuple[int, int]:
    """minpoll and maxpoll as ntpd 4.2.8 ends up with them (ntp_config.c create_peer_node,
    ntp_peer.c newpeer), with a warning for each value it changes."""
    lo, hi = DEFAULT_MINPOLL, DEFAULT_MAXPOLL
    if minpoll is not None:
        tok, lo = minpoll
        if lo < POLL_MIN or lo > MINPOLL_BYTE:
            ctx.warning(tok, f"minpoll {lo} is out of range {POLL_MIN}..{POLL_MAX}; "
                        f"using {POLL_MIN}, as ntpd does")
            lo = POLL_MIN
        elif lo > POLL_MAX:
            ctx.warning(tok, f"minpoll {lo} is out of range {POLL_MIN}..{POLL_MAX}; "
                        f"using {POLL_MAX}, as ntpd does")
            lo = POLL_MAX
    if maxpoll is not None:
        tok, hi = maxpoll
        if hi < 0 or hi > POLL_MAX:
            ctx.warning(tok, f"maxpoll {hi} is out of range {POLL_MIN}..{POLL_MAX}; "
                        f"using {POLL_MAX}, as ntpd does")
            hi = POLL_MAX
        elif hi == 0:
            ctx.warning(tok, f"maxpoll 0 means the default, {DEFAULT_MAXPOLL}, in ntpd")
            hi = DEFAULT_MAXPOLL
        elif hi < POLL_MIN:
            ctx.warning(tok, f"maxpoll {hi} is out of range {POLL_MIN}..{POLL_MAX}; "
                        f"using {POLL_MIN}, as ntpd does")
            hi = POLL_MIN
    if lo > hi:
        where = minpoll[0] if minpoll is not None else head
        ctx.warning(where, f"minpoll {lo} is greater than maxpoll {hi}; using minpoll {hi}, "
                    "as ntpd does")
        lo = hi
    return lo, hi


def _int(ctx: Context, args: list[Token], i: int, tok: Token) -> int | None:
    return ctx.int_arg(args, i, tok, tok.text, *_WIDE)


def _version(ctx: Context, tok: Token, value: int) -> int | None:
    if value < 0 or value >= VERSION_BYTE:
        ctx.error(tok, f"version {value} is out of range 1..4",
                  "ntpd drops such a line too")
        return None
    if not 1 <= value <= 4:
        ctx.warning(tok, f"version {value} is not an NTP version pyntpd speaks; sending 4")
        return 4
    return value


def _key(ctx: Context, tok: Token, value: int) -> int | None:
    """`key 0` is no key in ntpd; a key id it cannot hold drops the line (never polled
    unauthenticated instead)."""
    if value == 0:
        ctx.warning(tok, "'key 0' means no key in ntpd: this server is not authenticated")
        return 0
    if not 1 <= value <= KEY_MAX:
        ctx.error(tok, f"key {value} is out of range 1..{KEY_MAX}")
        return None
    return value


def handle_association(ctx: Context, head: Token, args: list[Token]) -> None:
    kind = _KINDS[head.text]
    family, i = _family_flags(ctx, args, 0)
    addr_tok = ctx.need(args, i, head, "address")
    if addr_tok is None:
        return
    i += 1
    if addr_tok.text.startswith("-"):
        ctx.error(addr_tok, f"expected an address after '{kind}', not '{addr_tok.text}'")
        return
    match = _REFCLOCK.fullmatch(addr_tok.text)
    if match:
        _refclock(ctx, head, addr_tok, int(match.group(1)), int(match.group(2)), args[i:])
        return
    addr_tok = unbracket(ctx, addr_tok)
    literal, ok = parse_address(ctx, addr_tok, family, unicast=True)
    if not ok:
        return
    if literal is not None and family is None:
        family = AF_INET if literal.version == 4 else AF_INET6

    flags: set[str] = set()
    values: dict[str, int | None] = {}
    polls: dict[str, tuple[Token, int]] = {}
    key_tok: Token | None = None
    while i < len(args):
        tok = args[i]
        name = tok.text
        i += 1
        if name in FLAG_OPTIONS:
            flags.add(name)
        elif name in ("minpoll", "maxpoll"):
            value = _int(ctx, args, i, tok)
            if value is not None:
                polls[name] = (tok, value)
            i += 1
        elif name in VALUE_OPTIONS:
            value = _int(ctx, args, i, tok)
            if value is not None:
                if name == "key":
                    key_tok = args[i]
                    value = _key(ctx, args[i], value)
                elif name == "version":
                    value = _version(ctx, args[i], value)
                elif not 1 <= value <= 65535:  # port, ntsport
                    ctx.error(args[i], f"{name} {value} is out of range 1..65535")
                    value = None
            values[name] = value
            i += 1
        elif name in AUTOKEY_OPTIONS:
            refused.autokey(ctx, tok)
            i += 1 if name == "ident" else 0
        elif name in IGNORED_FLAGS:
            ctx.warning(tok, f"option '{name}' ignored: {IGNORED_FLAGS[name]}")
        elif name in IGNORED_VALUES:
            ctx.need(args, i, tok, name)
            i += 1
            ctx.warning(tok, f"option '{name}' ignored: {IGNORED_VALUES[name]}")
        elif name in ("-4", "-6"):
            ctx.error(tok, f"'{name}' must come before the address")
        else:
            ctx.unknown(tok, "option", SERVER_OPTIONS, f"for '{kind}'")
            break  # what follows may be this option's value: no cascade of errors
    key = values.get("key") or None
    if kind == "peer" and key is None and ctx.line_ok:
        ctx.warning(head, PEER_AS_SERVER, PEER_AS_SERVER_HINT)
        kind = "server"
    if "nts" in flags and (kind == "peer" or key is not None):
        ctx.error(head, f"'nts' cannot be combined with {'peer' if kind == 'peer' else 'key'}",
                  "NTS authenticates client/server associations on its own: use "
                  "'server HOST nts' without 'key'")
    if "xleave" in flags and kind == "peer":
        flags.discard("xleave")
        ctx.warning(head, "option 'xleave' ignored: pyntpd has interleaved mode for 'server' "
                          "and 'pool', not for symmetric peers")
    if not ctx.line_ok:
        return
    minpoll, maxpoll = clamp_polls(ctx, head, polls.get("minpoll"), polls.get("maxpoll"))
    server = ServerConfig(
        kind=kind,
        address=addr_tok.text,
        port=values.get("port") or 123,
        family=family,
        prefer="prefer" in flags,
        iburst="iburst" in flags,
        burst="burst" in flags,
        minpoll=minpoll,
        maxpoll=maxpoll,
        key=key,
        version=values.get("version") or 4,
        noselect="noselect" in flags,
        true="true" in flags,
        nts="nts" in flags,
        nts_port=values.get("ntsport") or 4460,
        xleave="xleave" in flags,
        location=addr_tok.loc,
    )
    index = (server.address.lower(), server.port)
    other = ctx.b.server_index.get(index)
    if other is not None:
        ctx.warning(
            addr_tok, f"duplicate {kind} '{server.address}' (first at {other.location}); ignored"
        )
        return
    ctx.b.server_index[index] = server
    ctx.b.servers.append(server)
    if server.key is not None and key_tok is not None:
        ctx.b.key_refs.append(KeyRef(server.key, key_tok, kind))


def _refclock(
    ctx: Context, head: Token, addr_tok: Token, clock_type: int, unit: int, args: list[Token]
) -> None:
    if clock_type > 255 or unit > 255:
        ctx.error(addr_tok, f"'{addr_tok.text}' is not a valid address")
        return
    if head.text != "server":
        ctx.error(head, f"reference clocks are configured with 'server', not '{head.text}'")
        return
    # Remembered even if the line has errors: its `fudge` then says why it is unused.
    ctx.b.refclock_lines.setdefault(addr_tok.text, addr_tok)
    flags: set[str] = set()
    polls: dict[str, tuple[Token, int]] = {}
    ignored: list[Token] = []
    mode = 0
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok.text in ("prefer", "noselect", "true"):
            flags.add(tok.text)
        elif tok.text in ("minpoll", "maxpoll"):
            value = _int(ctx, args, i, tok)
            if value is not None:
                polls[tok.text] = (tok, value)
            i += 1
        elif tok.text == "mode":
            mode = ctx.int_arg(args, i, tok, "mode", 0, 255) or 0
            if clock_type == 1:
                ignored.append(tok)
            i += 1
        elif tok.text in REFCLOCK_NO_EFFECT_FLAGS:
            ignored.append(tok)
        elif tok.text in REFCLOCK_NO_EFFECT_VALUES:
            _int(ctx, args, i, tok)
            ignored.append(tok)
            i += 1
        elif tok.text == "ttl":
            ctx.error(tok, "'ttl' does not apply to reference clocks", "ntpd drops this line too")
            break
        elif tok.text in AUTOKEY_OPTIONS:
            refused.autokey(ctx, tok)
            break
        else:
            ctx.unknown(tok, "option", REFCLOCK_OPTIONS, "for a reference clock")
            break
    if not ctx.line_ok:
        return
    if clock_type != 1 and clock_type not in REFCLOCK_DRIVERS:
        ctx.b.unsupported_refclocks.add(addr_tok.text)
        ctx.warning(addr_tok, f"refclock type {clock_type} is not supported; line ignored",
                    REFCLOCK_ALTERNATIVE)
        return
    driver = "the LOCAL driver" if clock_type == 1 else "a reference clock"
    for tok in ignored:
        ctx.warning(tok, f"option '{tok.text}' has no effect on {driver}; ignored")
    minpoll, maxpoll = clamp_polls(ctx, head, polls.get("minpoll"), polls.get("maxpoll"))
    if clock_type != 1:
        _driver_clock(ctx, addr_tok, clock_type, unit, flags, minpoll, maxpoll, mode)
        return
    if "true" in flags:
        ctx.warning(addr_tok, "option 'true' has no effect on the LOCAL driver; ignored")
    for other in ctx.b.local_clocks:
        if other.unit == unit:
            ctx.warning(
                addr_tok, f"duplicate server '{addr_tok.text}' (first at {other.location}); ignored"
            )
            return
    ctx.b.local_clocks.append(
        LocalClock(
            unit=unit,
            prefer="prefer" in flags,
            noselect="noselect" in flags,
            minpoll=minpoll,
            maxpoll=maxpoll,
            location=addr_tok.loc,
        )
    )


def handle_unpeer(ctx: Context, head: Token, args: list[Token]) -> None:
    """`unpeer`/`unconfig ADDRESS`: ntpd applies them after every association of the file
    exists, so the association goes wherever the line is (apply_unpeers)."""
    tok = ctx.need(args, 0, head, "address or association id")
    ctx.no_more(args, 1, head.text)
    if tok is None or not ctx.line_ok:
        return
    if tok.text.isdigit() and int(tok.text) <= 65535:
        ctx.warning(tok, f"'{head.text} {tok.text}' names an association id, which only "
                    "exists at run time; ignored")
        return
    target = unbracket(ctx, tok)
    _, ok = parse_address(ctx, target, None, unicast=False)
    if ok:
        ctx.b.unpeers.append(target)


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower().removesuffix(".") == b.lower().removesuffix(".")


def apply_unpeers(ctx: Context) -> None:
    for tok in ctx.b.unpeers:
        gone = [s for s in ctx.b.servers if _same_address(s.address, tok.text)]
        clocks = [c for c in ctx.b.local_clocks if c.address == tok.text]
        if not gone and not clocks:
            ctx.warning(tok, f"no 'server', 'pool' or 'peer' line for '{tok.text}'; nothing "
                        "to remove")
            continue
        for server in gone:
            ctx.warning(tok, f"removes the {server.kind} '{server.address}' of "
                        f"{server.location}, as ntpd does")
        ctx.b.servers = [s for s in ctx.b.servers if s not in gone]
        ctx.b.local_clocks = [c for c in ctx.b.local_clocks if c not in clocks]


def _driver_clock(ctx: Context, addr_tok: Token, clock_type: int, unit: int, flags: set[str],
                  minpoll: int, maxpoll: int, mode: int) -> None:
    for other in ctx.b.refclocks:
        if (other.type, other.unit) == (clock_type, unit):
            ctx.warning(
                addr_tok, f"duplicate server '{addr_tok.text}' (first at {other.location}); ignored"
            )
            return
    if clock_type == 46 and mode & 0x03 == 3:
        ctx.warning(addr_tok, "GPSD_JSON mode 3 is not an operating mode (0: serial time, "
                    "1: strict PPS, 2: auto); mode 0 used, as ntpd does")
    ctx.b.refclocks.append(RefclockConfig(
        type=clock_type, unit=unit, mode=mode, prefer="prefer" in flags,
        noselect="noselect" in flags, true="true" in flags, minpoll=minpoll, maxpoll=maxpoll,
        location=addr_tok.loc))


def handle_fudge(ctx: Context, head: Token, args: list[Token]) -> None:
    addr_tok = ctx.need(args, 0, head, "reference clock address")
    if addr_tok is None:
        return
    match = _REFCLOCK.fullmatch(addr_tok.text)
    if not match or int(match.group(1)) > 255 or int(match.group(2)) > 255:
        ctx.error(
            addr_tok,
            f"'fudge' applies to reference clocks (127.127.T.U), not '{addr_tok.text}'",
        )
        return
    fudge = Fudge(addr_tok.text, addr_tok)
    if len(args) < 2:
        ctx.error(ctx.after(addr_tok), "missing fudge option", "e.g. 'stratum 10'")
    i = 1
    while i < len(args):
        tok = args[i]
        i += 1
        name = tok.text
        if name == "stratum":
            value = _int(ctx, args, i, tok)
            if value is not None and not 0 <= value <= FUDGE_STRATUM_MAX:
                ctx.warning(args[i], f"fudge stratum {value} is out of range "
                            f"0..{FUDGE_STRATUM_MAX}; ignored, as ntpd does")
            elif value is not None:
                fudge.stratum = value
        elif name == "refid":
            ref = ctx.need(args, i, tok, "refid")
            if ref is not None:
                fudge.refid = _refid(ctx, ref)
        elif name == "time1":
            fudge.time1 = ctx.float_arg(args, i, tok, name, -86400.0, 86400.0)
        elif name == "time2":
            fudge.time2 = ctx.float_arg(args, i, tok, name, -86400.0, 86400.0)
        elif name == "minjitter":
            ctx.float_arg(args, i, tok, name, -86400.0, 86400.0)
            fudge.ignored.append(name)
        elif name in ("flag1", "flag2", "flag3", "flag4"):
            value = ctx.int_arg(args, i, tok, name, 0, 1)
            if value is not None:
                fudge.flags[1 << (int(name[-1]) - 1)] = bool(value)
        elif name == "abbrev":
            ctx.need(args, i, tok, name)
            fudge.ignored.append(name)
        else:
            ctx.unknown(tok, "fudge option", FUDGE_OPTIONS)
            break
        i += 1
    if ctx.line_ok:
        ctx.b.fudges.append(fudge)


def _refid(ctx: Context, ref: Token) -> str | None:
    text = ref.text
    if not text or not all(0x21 <= ord(c) <= 0x7E for c in text):
        ctx.error(ref, f"refid '{text}' must be 1 to 4 printable ASCII characters")
        return None
    if len(text) > 4:
        ctx.warning(ref, f"refid '{text}' is longer than 4 characters; using "
                    f"'{text[:4]}', as ntpd does")
    return text[:4]


def apply_fudges(ctx: Context) -> None:
    """ntpd applies fudge lines after all servers exist, so their order does not matter."""
    clocks = {c.unit: c for c in ctx.b.local_clocks}
    drivers = {(c.type, c.unit): c for c in ctx.b.refclocks}
    for fudge in ctx.b.fudges:
        match = _REFCLOCK.fullmatch(fudge.address)
        assert match is not None
        clock_type, unit = int(match.group(1)), int(match.group(2))
        if fudge.address in ctx.b.unsupported_refclocks:
            continue
        if (clock_type, unit) in drivers:
            if clock_type in (20, 22) and fudge.flags.get(KERNEL_PPS):
                ctx.warning(fudge.token, "fudge 'flag3 1' (the kernel's PPS discipline) is "
                            "refused: pyntpd disciplines the clock with the PPS samples "
                            "itself; flag3 left 0",
                            "remove 'flag3 1'; the PPS samples are used all the same")
                fudge = replace(fudge, flags={b: on for b, on in fudge.flags.items()
                                              if b != KERNEL_PPS})
            drivers[clock_type, unit] = _fudged(drivers[clock_type, unit], fudge)
            continue
        if clock_type != 1 or unit not in clocks:
            line = ctx.b.refclock_lines.get(fudge.address)
            if line is not None:
                why = f"its 'server {fudge.address}' line ({line.loc}) is not used"
            else:
                why = f"it has no matching 'server {fudge.address}' line"
            ctx.warning(fudge.token, f"fudge for '{fudge.address}' ignored: {why}")
            continue
        ignored = [*fudge.ignored, *(["time2"] if fudge.time2 is not None else []),
                   *(f"flag{bit.bit_length()}" for bit in fudge.flags)]
        for name in ignored:
            ctx.warning(fudge.token, f"fudge '{name}' has no effect on the LOCAL driver; ignored")
        clock = clocks[unit]
        clocks[unit] = replace(
            clock,
            stratum=clock.stratum if fudge.stratum is None else fudge.stratum,
            refid=clock.refid if fudge.refid is None else fudge.refid,
            time1=clock.time1 if fudge.time1 is None else fudge.time1,
        )
    ctx.b.local_clocks = list(clocks.values())
    ctx.b.refclocks = list(drivers.values())


def _fudged(clock: RefclockConfig, fudge: Fudge) -> RefclockConfig:
    flags = clock.flags
    for bit, on in fudge.flags.items():
        flags = flags | bit if on else flags & ~bit
    return replace(
        clock,
        stratum=clock.stratum if fudge.stratum is None else fudge.stratum,
        refid=clock.refid if fudge.refid is None else fudge.refid,
        time1=clock.time1 if fudge.time1 is None else fudge.time1,
        time2=clock.time2 if fudge.time2 is None else fudge.time2,
        flags=flags,
    )
