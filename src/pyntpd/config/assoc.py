"""`server`, `pool`, `peer` and `fudge`: time sources.

Host names are only syntax-checked here. ntpd resolves them at start-up and gives up on a
name that fails; pyntpd leaves them to the daemon, which retries, so a DNS outage at boot
does not silently leave a server without sources.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

from . import refused
from .context import Context, Fudge, KeyRef
from .lexer import Token
from .model import AF_INET, AF_INET6, IPAddress, LocalClock, ServerConfig, ServerKind

POLL_MIN, POLL_MAX = 3, 17
POLL_HINT = "ntpd would silently clamp it to 3..17"

FLAG_OPTIONS = ("prefer", "iburst", "burst", "noselect", "true", "nts", "xleave")
VALUE_OPTIONS = ("minpoll", "maxpoll", "key", "version", "port", "ntsport")
# ntpd options pyntpd does not implement; accepted so old files still load.
IGNORED_FLAGS = {
    "preempt": "pyntpd does not demobilise preemptable associations",
}
IGNORED_VALUES = {
    "ttl": "ttl only matters for manycast, which pyntpd does not support",
    "mode": "mode only matters for reference clock drivers",
}
_VALUE_RANGES: dict[str, tuple[int, int, str | None]] = {
    "minpoll": (POLL_MIN, POLL_MAX, POLL_HINT),
    "maxpoll": (POLL_MIN, POLL_MAX, POLL_HINT),
    "key": (1, 65535, None),
    "version": (1, 4, None),
    "port": (1, 65535, None),
    "ntsport": (1, 65535, None),
}
SERVER_OPTIONS = [*FLAG_OPTIONS, *VALUE_OPTIONS, *IGNORED_FLAGS, *IGNORED_VALUES, "autokey"]
REFCLOCK_OPTIONS = ["prefer", "noselect", "minpoll", "maxpoll", "mode"]
FUDGE_OPTIONS = ["stratum", "refid", "time1", "time2", "flag1", "flag2", "flag3", "flag4"]

_REFCLOCK = re.compile(r"127\.127\.([0-9]{1,3})\.([0-9]{1,3})")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_NUMERIC = re.compile(r"[0-9.]+")

_KINDS: dict[str, ServerKind] = {"server": "server", "pool": "pool", "peer": "peer"}

PEER_KEY_HINT = (
    "unauthenticated symmetric peers can be used to force the clock (CVE-2015-7871 class); "
    "add 'key N' with a trusted key, or use 'server'"
)


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
    if ":" in text or _NUMERIC.fullmatch(text):
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
    literal, ok = parse_address(ctx, addr_tok, family, unicast=True)
    if not ok:
        return
    if literal is not None and family is None:
        family = AF_INET if literal.version == 4 else AF_INET6

    flags: set[str] = set()
    values: dict[str, int | None] = {}
    key_tok: Token | None = None
    while i < len(args):
        tok = args[i]
        name = tok.text
        i += 1
        if name in FLAG_OPTIONS:
            flags.add(name)
        elif name in VALUE_OPTIONS:
            if name == "key":
                key_tok = args[i] if i < len(args) else None
            lo, hi, hint = _VALUE_RANGES[name]
            values[name] = ctx.int_arg(args, i, tok, name, lo, hi, hint)
            i += 1
        elif name == "autokey":
            refused.autokey(ctx, tok)
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
    minpoll = values.get("minpoll") or 6
    maxpoll = values.get("maxpoll") or 10
    if minpoll > maxpoll and ctx.line_ok:
        ctx.error(head, f"minpoll {minpoll} is greater than maxpoll {maxpoll}")
    if kind == "peer" and "key" not in values:
        ctx.error(head, "'peer' without 'key' is refused", PEER_KEY_HINT)
    if "nts" in flags and (kind == "peer" or "key" in values):
        ctx.error(head, f"'nts' cannot be combined with {'peer' if kind == 'peer' else 'key'}",
                  "NTS authenticates client/server associations on its own: use "
                  "'server HOST nts' without 'key'")
    if "xleave" in flags and kind == "peer":
        flags.discard("xleave")
        ctx.warning(head, "option 'xleave' ignored: pyntpd has interleaved mode for 'server' "
                          "and 'pool', not for symmetric peers")
    if not ctx.line_ok:
        return
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
        key=values.get("key"),
        version=values.get("version") or 4,
        noselect="noselect" in flags,
        true="true" in flags,
        nts="nts" in flags,
        nts_port=values.get("ntsport") or 4460,
        xleave="xleave" in flags,
        location=addr_tok.loc,
    )
    key = (server.address.lower(), server.port)
    other = ctx.b.server_index.get(key)
    if other is not None:
        ctx.warning(
            addr_tok, f"duplicate {kind} '{server.address}' (first at {other.location}); ignored"
        )
        return
    ctx.b.server_index[key] = server
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
    if clock_type != 1:
        ctx.b.unsupported_refclocks.add(addr_tok.text)
        ctx.warning(
            addr_tok,
            f"refclock type {clock_type} is not supported; line ignored",
            "pyntpd supports only the LOCAL driver (127.127.1.x); use a network source",
        )
        return
    flags: set[str] = set()
    polls: dict[str, int | None] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok.text in ("prefer", "noselect"):
            flags.add(tok.text)
        elif tok.text in ("minpoll", "maxpoll"):
            polls[tok.text] = ctx.int_arg(args, i, tok, tok.text, POLL_MIN, POLL_MAX, POLL_HINT)
            i += 1
        elif tok.text == "mode":
            ctx.int_arg(args, i, tok, "mode", 0, 255)
            i += 1
            ctx.warning(tok, "option 'mode' has no effect on the LOCAL driver; ignored")
        else:
            ctx.unknown(tok, "option", REFCLOCK_OPTIONS, "for a reference clock")
            break
    minpoll = polls.get("minpoll") or 6
    maxpoll = polls.get("maxpoll") or 10
    if minpoll > maxpoll and ctx.line_ok:
        ctx.error(head, f"minpoll {minpoll} is greater than maxpoll {maxpoll}")
    if not ctx.line_ok:
        return
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
            fudge.stratum = ctx.int_arg(args, i, tok, "stratum", 0, 15)
        elif name == "refid":
            ref = ctx.need(args, i, tok, "refid")
            if ref is not None:
                if 1 <= len(ref.text) <= 4 and all(0x21 <= ord(c) <= 0x7E for c in ref.text):
                    fudge.refid = ref.text
                else:
                    ctx.error(ref, f"refid '{ref.text}' must be 1 to 4 printable ASCII characters")
        elif name == "time1":
            fudge.time1 = ctx.float_arg(args, i, tok, name, -86400.0, 86400.0)
        elif name == "time2":
            ctx.float_arg(args, i, tok, name, -86400.0, 86400.0)
            fudge.ignored.append(name)
        elif name in ("flag1", "flag2", "flag3", "flag4"):
            ctx.int_arg(args, i, tok, name, 0, 1)
            fudge.ignored.append(name)
        else:
            ctx.unknown(tok, "fudge option", FUDGE_OPTIONS)
            break
        i += 1
    if ctx.line_ok:
        ctx.b.fudges.append(fudge)


def apply_fudges(ctx: Context) -> None:
    """ntpd applies fudge lines after all servers exist, so their order does not matter."""
    clocks = {c.unit: c for c in ctx.b.local_clocks}
    for fudge in ctx.b.fudges:
        match = _REFCLOCK.fullmatch(fudge.address)
        assert match is not None
        clock_type, unit = int(match.group(1)), int(match.group(2))
        if fudge.address in ctx.b.unsupported_refclocks:
            continue
        if clock_type != 1 or unit not in clocks:
            ctx.warning(
                fudge.token,
                f"fudge for '{fudge.address}' has no matching 'server {fudge.address}' line; "
                "ignored",
            )
            continue
        for name in fudge.ignored:
            ctx.warning(fudge.token, f"fudge '{name}' has no effect on the LOCAL driver; ignored")
        clock = clocks[unit]
        clocks[unit] = replace(
            clock,
            stratum=clock.stratum if fudge.stratum is None else fudge.stratum,
            refid=clock.refid if fudge.refid is None else fudge.refid,
            time1=clock.time1 if fudge.time1 is None else fudge.time1,
        )
    ctx.b.local_clocks = list(clocks.values())
