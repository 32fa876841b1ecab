"""`broadcast`, `broadcastclient`, `multicastclient`, `broadcastdelay`, `ttl`: one-to-many NTP.

The server side is harmless to the host that runs it and is what the files ask for most:
`broadcast ADDRESS [key N] [ttl N] [version N] [minpoll N]`, as ntpd 4.2.8 reads it (the
option list of `server`; those that mean nothing for a broadcaster are warned about).

The client side is where ntpd's broadcast mode was attacked (CVE-2015-7973, -7979): any host
on the segment can send a broadcast. pyntpd listens only to broadcasts signed with a trusted
key, whatever `disable auth` says, so a `broadcastclient` or `multicastclient` without a
trusted key could never hear anything: that is an error saying why and what to do instead,
not a daemon that quietly listens to nobody. `manycastserver`/`manycastclient` stay refused
(config/refused).

`ttl N` on a `broadcast` line is ntpd's: an index 0..7 into the `ttl` list (default 0 32 64
... 224), not a hop count; 0 leaves the kernel's multicast default of one hop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import replace

from . import refused
from .context import Context, KeyRef
from .diagnostics import DiagnosticSink, Location
from .keys import SymmetricKey
from .lexer import Token
from .model import (
    DEFAULT_BROADCAST_DELAY,
    MAX_TTL,
    BroadcastClientConfig,
    BroadcastConfig,
    ParseResult,
)

POLL_MIN, POLL_MAX = 3, 17
NTP_MULTICAST_GROUP = "224.0.1.1"  # IANA's NTP group: multicastclient's default, as ntpd's
BROADCAST_DELAY_LIMIT = 10.0  # s; ntpd's typical values are a few ms

NO_EFFECT = ("burst", "iburst", "prefer", "noselect", "true", "preempt", "maxpoll", "mode")
BROADCAST_OPTIONS = ["key", "ttl", "version", "minpoll", *NO_EFFECT, "xleave", "autokey"]

CLIENT_WHY = (
    "pyntpd accepts only broadcasts signed with a trusted key (an unauthenticated broadcast "
    "client takes time from any host on the segment: CVE-2015-7973, CVE-2015-7979), and no "
    "key is trusted"
)
CLIENT_FIX = (
    "add 'keys FILE' and 'trustedkey N' with the key of the broadcaster's "
    "'broadcast ADDRESS key N', or use 'server' lines"
)


def _literal(ctx: Context, tok: Token, family: int | None) -> ipaddress.IPv4Address | \
        ipaddress.IPv6Address | None:
    text = tok.text.removeprefix("[").removesuffix("]")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        ctx.error(tok, f"'{tok.text}' is not an IP address",
                  "broadcast and multicast lines take a literal address, e.g. "
                  "'192.168.1.255' or '224.0.1.1'")
        return None
    if family is not None and family != addr.version:
        ctx.error(tok, f"'{tok.text}' is an IPv{addr.version} address but "
                       f"'-{family}' was given")
        return None
    if addr.is_unspecified:
        ctx.error(tok, f"'{tok.text}' is not an address packets can be sent to")
        return None
    return addr


def handle_broadcast(ctx: Context, head: Token, args: list[Token]) -> None:
    i = 0
    family: int | None = None
    while i < len(args) and args[i].text in ("-4", "-6"):
        family = 4 if args[i].text == "-4" else 6
        i += 1
    addr_tok = ctx.need(args, i, head, "address")
    if addr_tok is None:
        return
    addr = _literal(ctx, addr_tok, family)
    i += 1
    values: dict[str, int] = {}
    key_tok: Token | None = None
    while i < len(args):
        tok = args[i]
        name = tok.text
        i += 1
        if name == "key":
            key_tok = args[i] if i < len(args) else None
            value = ctx.int_arg(args, i, tok, "key", 1, 65535)
        elif name == "ttl":
            value = ctx.int_arg(args, i, tok, "ttl", 0, MAX_TTL - 1,
                                "as in ntpd, ttl picks an entry of the 'ttl' list (0..7)")
        elif name == "version":
            value = ctx.int_arg(args, i, tok, "version", 1, 4)
        elif name == "minpoll":
            value = _clamped_poll(ctx, args, i, tok)
        elif name in ("maxpoll", "mode"):
            ctx.need(args, i, tok, name)
            ctx.warning(tok, f"option '{name}' has no effect on a 'broadcast' line; ignored",
                        "a broadcaster sends every 2**minpoll s" if name == "maxpoll" else None)
            i += 1
            continue
        elif name in NO_EFFECT:
            ctx.warning(tok, f"option '{name}' has no effect on a 'broadcast' line; ignored")
            continue
        elif name == "xleave":
            ctx.warning(tok, "option 'xleave' ignored: pyntpd sends basic broadcasts, which "
                             "interleaved clients also take")
            continue
        elif name == "autokey":
            refused.autokey(ctx, tok)
            continue
        else:
            ctx.unknown(tok, "option", BROADCAST_OPTIONS, "for 'broadcast'")
            break  # what follows may be this option's value
        if value is not None:
            values[name] = value
        i += 1
    if addr is None or not ctx.line_ok:
        return
    cast = ctx.b.cast
    text = str(addr)
    for other in cast.broadcasts:
        if other.address == text:
            ctx.warning(addr_tok, f"duplicate broadcast to '{text}' (first at {other.location});"
                                  " ignored")
            return
    cast.broadcasts.append(BroadcastConfig(
        address=text, key=values.get("key"), ttl=values.get("ttl", 0),
        version=values.get("version", 4), minpoll=values.get("minpoll", 6),
        location=addr_tok.loc))
    if key_tok is not None and "key" in values:
        ctx.b.key_refs.append(KeyRef(values["key"], key_tok, "broadcast"))


def _clamped_poll(ctx: Context, args: list[Token], i: int, tok: Token) -> int | None:
    """ntpd clamps a broadcast minpoll into 3..17 (with a log line); so does pyntpd."""
    value = ctx.int_arg(args, i, tok, "minpoll", -(2**31), 2**31 - 1)
    if value is None:
        return None
    clamped = max(POLL_MIN, min(value, POLL_MAX))
    if clamped != value:
        ctx.warning(args[i], f"minpoll {value} is out of range {POLL_MIN}..{POLL_MAX}; "
                             f"{clamped} is used, as ntpd does")
    return clamped


def handle_broadcastclient(ctx: Context, head: Token, args: list[Token]) -> None:
    if args and args[0].text == "novolley":
        ctx.error(args[0], "'novolley' is not ntpd 4.2.8 syntax",
                  "for a fixed delay without the calibration exchange, write "
                  "'broadcastdelay SECONDS'")
        return
    ctx.no_more(args, 0, "broadcastclient")
    if ctx.line_ok:
        ctx.b.flags["bclient"] = True  # ntpd: the same switch as `enable bclient`
        ctx.b.cast.client_token = head


def handle_multicastclient(ctx: Context, head: Token, args: list[Token]) -> None:
    """Each group stands alone: a bad one is dropped, the others are joined."""
    cast = ctx.b.cast
    groups: list[str] = []
    for tok in args or ():
        addr = _literal(ctx, tok, None)
        if addr is None:
            continue
        if not addr.is_multicast:
            ctx.error(tok, f"'{tok.text}' is not a multicast address",
                      "'broadcastclient' listens to broadcasts on this host's subnets")
            continue
        groups.append(str(addr))
    if not args:
        groups.append(NTP_MULTICAST_GROUP)  # ntpd's default group (and -m's)
    for group in groups:
        if group not in cast.groups:
            cast.groups.append(group)
    if groups and cast.client_token is None:
        cast.client_token = head


def handle_broadcastdelay(ctx: Context, head: Token, args: list[Token]) -> None:
    value = ctx.float_arg(args, 0, head, "broadcastdelay", -BROADCAST_DELAY_LIMIT,
                          BROADCAST_DELAY_LIMIT, "the round-trip delay in seconds, e.g. 0.004")
    ctx.no_more(args, 1, "broadcastdelay")
    if value is not None and ctx.line_ok:
        # ntpd: 0 means its default (calibrate, give up above 50 ms).
        ctx.b.cast.delay = value or DEFAULT_BROADCAST_DELAY


def handle_ttl(ctx: Context, head: Token, args: list[Token]) -> None:
    """ntpd's ttl mapping vector; entries past the eighth are ignored, as there."""
    if not args:
        ctx.error(ctx.after(head), "missing ttl value after 'ttl'")
        return
    values: list[int] = []
    for tok in args:
        value = ctx.int_value(tok, "ttl", 0, 255)
        if value is None:
            continue
        if len(values) == MAX_TTL:
            ctx.warning(tok, f"more than {MAX_TTL} ttl values; '{tok.text}' ignored, as ntpd "
                             "does")
            continue
        values.append(value)
    if ctx.line_ok and values:
        ctx.b.cast.ttl_map = tuple(values)


def finish(
    ctx: Context, keys: Iterable[SymmetricKey], trusted: Iterable[int]
) -> tuple[tuple[BroadcastConfig, ...], tuple[int, ...] | None, BroadcastClientConfig]:
    """The broadcast part of the configuration, once the keys file is read."""
    cast = ctx.b.cast
    enabled = bool(ctx.b.flags.get("bclient", False))
    groups = tuple(cast.groups)
    where = cast.client_token
    client = BroadcastClientConfig(
        enabled=enabled, groups=groups,
        delay=DEFAULT_BROADCAST_DELAY if cast.delay is None else cast.delay,
        location=where.loc if where is not None else BroadcastClientConfig().location)
    if client.listening:
        usable = {k.key_id for k in keys} & set(trusted)
        if not usable:
            what = "broadcastclient" if enabled else "multicastclient"
            ctx.error(where if where is not None else Location("<broadcastclient>"),
                      f"'{what}' without a trusted key is refused: {CLIENT_WHY}", CLIENT_FIX)
            ctx.b.flags["bclient"] = False
            client = BroadcastClientConfig(delay=client.delay)
    return tuple(cast.broadcasts), cast.ttl_map, client


def with_command_line(
    result: ParseResult, bclient: bool, groups: Sequence[str], delay: float | None
) -> ParseResult:
    """ntpd's -b (broadcastclient), -m GROUP (multicastclient GROUP) and -r SECONDS
    (broadcastdelay), applied over the file, under the same rule: a trusted key, or refused."""
    if not bclient and not groups and delay is None:
        return result
    config = result.config
    client = config.broadcast_client
    where = Location("<command line>")
    merged = tuple(dict.fromkeys((*client.groups, *groups)))
    client = replace(client, enabled=client.enabled or bclient, groups=merged,
                     delay=client.delay if delay is None else delay or DEFAULT_BROADCAST_DELAY,
                     location=client.location if client.listening else where)
    flags = config.flags
    diagnostics = list(result.diagnostics)
    if client.listening and not {k.key_id for k in config.keys} & config.trusted_keys:
        sink = DiagnosticSink()
        sink.error(where, f"{'-b' if bclient else '-m'} without a trusted key is refused: "
                          f"{CLIENT_WHY}", CLIENT_FIX)
        diagnostics += sink.items
        client = BroadcastClientConfig(delay=client.delay)
    elif bclient:
        flags = replace(flags, bclient=True)
    return replace(result, config=replace(config, broadcast_client=client, flags=flags),
                   diagnostics=diagnostics)
