"""`restrict`, `interface`/`nic` and `listen`: who may talk to us, and where we listen.

`restrict` semantics follow ntpd 4.2.8 (ntp_config.c, config_access): an address without
`mask` is a single host; `restrict default` without -4/-6 sets both the IPv4 and the IPv6
default; a host name is resolved once, at parse time, into one host rule per address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

from pyntpd.proto.access_types import RESTRICT_KEYWORDS, RestrictFlag, RestrictRule

from .assoc import is_host_name, parse_address
from .context import Context
from .lexer import Token
from .model import AF_INET, AF_INET6, InterfaceAction, InterfaceMatch, InterfaceRule, IPNetwork

# ntpd flags accepted without effect, and why.
IGNORED_FLAGS = {
    "noepeer": "pyntpd never creates ephemeral peer associations",
    "flake": "flake is a testing aid that drops packets",
}
IGNORED_VALUE_FLAGS = {
    "ippeerlimit": "pyntpd never creates ephemeral peer associations",
    "serverresponse": "server response fuzzing is not supported",
}
REFUSED_FLAGS: dict[str, str] = {}
ALL_FLAGS = [*RESTRICT_KEYWORDS, *IGNORED_FLAGS, *IGNORED_VALUE_FLAGS, *REFUSED_FLAGS, "mask"]

INTERFACE_ACTIONS: dict[str, InterfaceAction] = {
    "listen": "listen",
    "ignore": "ignore",
    "drop": "drop",
}
INTERFACE_CLASSES: dict[str, InterfaceMatch] = {
    "all": "all",
    "ipv4": "ipv4",
    "ipv6": "ipv6",
    "wildcard": "wildcard",
}
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")


def _mask_prefix(ctx: Context, tok: Token, version: int) -> int | None:
    try:
        mask = ipaddress.ip_address(tok.text)
    except ValueError:
        ctx.error(tok, f"'{tok.text}' is not a valid mask")
        return None
    if mask.version != version:
        ctx.error(tok, f"mask '{tok.text}' is IPv{mask.version}, the address is IPv{version}")
        return None
    bits = 32 if version == 4 else 128
    value = int(mask)
    inverted = ~value & ((1 << bits) - 1)
    if inverted & (inverted + 1):
        ctx.error(
            tok,
            f"mask '{tok.text}' is not contiguous",
            "masks must be leading one bits, e.g. 255.255.255.0",
        )
        return None
    return bits - inverted.bit_length()


def _network(ctx: Context, addr_tok: Token, net: IPNetwork, given: str) -> IPNetwork:
    if int(net.network_address) != int(ipaddress.ip_address(given)):
        ctx.warning(
            addr_tok,
            f"'{given}' has host bits set outside the mask; the rule covers {net}",
        )
    return net


def handle_restrict(ctx: Context, head: Token, args: list[Token]) -> None:
    family: int | None = None
    i = 0
    while i < len(args) and args[i].text in ("-4", "-6"):
        family = AF_INET if args[i].text == "-4" else AF_INET6
        i += 1
    target = ctx.need(args, i, head, "address, 'default' or 'source'")
    if target is None:
        return
    i += 1
    mask_tok: Token | None = None
    if i < len(args) and args[i].text == "mask":
        mask_tok = ctx.need(args, i + 1, args[i], "mask")
        i += 2

    flags = RestrictFlag.NONE
    while i < len(args):
        tok = args[i]
        i += 1
        name = tok.text
        if name in RESTRICT_KEYWORDS:
            flags |= RESTRICT_KEYWORDS[name]
        elif name in IGNORED_FLAGS:
            ctx.warning(tok, f"restrict flag '{name}' ignored: {IGNORED_FLAGS[name]}")
        elif name in IGNORED_VALUE_FLAGS:
            ctx.need(args, i, tok, name)
            i += 1
            ctx.warning(tok, f"restrict flag '{name}' ignored: {IGNORED_VALUE_FLAGS[name]}")
        elif name in REFUSED_FLAGS:
            ctx.error(tok, f"restrict flag '{name}' is not supported: {REFUSED_FLAGS[name]}")
        elif name == "mask":
            ctx.error(tok, "'mask' must directly follow the address")
        else:
            ctx.unknown(tok, "restrict flag", ALL_FLAGS)

    rules: list[RestrictRule] = []
    text = target.text
    if text in ("default", "source"):
        if mask_tok is not None:
            ctx.error(mask_tok, f"'mask' cannot be used with 'restrict {text}'")
        if text == "source":
            if family is not None:
                ctx.error(target, "'-4'/'-6' cannot be used with 'restrict source'")
            rules.append(RestrictRule(None, flags | RestrictFlag.SOURCE))
        else:
            if family in (None, AF_INET):
                rules.append(RestrictRule(ipaddress.ip_network("0.0.0.0/0"), flags, True))
            if family in (None, AF_INET6):
                rules.append(RestrictRule(ipaddress.ip_network("::/0"), flags, True))
    elif "/" in text:
        # pyntpd extension: ADDRESS/PREFIX, as ntpsec accepts.
        if mask_tok is not None:
            ctx.error(mask_tok, "give either ADDRESS/PREFIX or 'mask', not both")
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            ctx.error(target, f"'{text}' is not a valid network")
        else:
            if family is not None and family != (AF_INET if net.version == 4 else AF_INET6):
                ctx.error(target, f"'{text}' does not match the -4/-6 flag")
            else:
                given = text.split("/", 1)[0]
                rules.append(RestrictRule(_network(ctx, target, net, given), flags))
    else:
        addr, ok = parse_address(ctx, target, family, unicast=False)
        if ok and addr is not None:
            prefix = addr.max_prefixlen
            if mask_tok is not None:
                got = _mask_prefix(ctx, mask_tok, addr.version)
                prefix = prefix if got is None else got
            plain = str(addr).split("%", 1)[0]
            net = ipaddress.ip_network(f"{plain}/{prefix}", strict=False)
            rules.append(RestrictRule(_network(ctx, target, net, plain), flags))
        elif ok and is_host_name(text) and ctx.line_ok:
            rules.extend(_resolve_rules(ctx, target, family, mask_tok, flags))
    if ctx.line_ok:
        for rule in rules:
            _add_rule(ctx, rule)


def _add_rule(ctx: Context, new: RestrictRule) -> None:
    """ntpd keeps one entry per (address, mask, ntpport): a repeated line adds its flags to
    the existing entry. `restrict source` instead replaces the previous template."""
    rules = ctx.b.restrictions
    key = (new.network, (new.flags & RestrictFlag.NTPPORT).value)
    i = ctx.b.restrict_index.get(key)
    if i is None:
        ctx.b.restrict_index[key] = len(rules)
        rules.append(new)
    elif new.network is None:
        rules[i] = new
    else:
        rules[i] = replace(rules[i], flags=rules[i].flags | new.flags)


def _resolve_rules(
    ctx: Context,
    target: Token,
    family: int | None,
    mask_tok: Token | None,
    flags: RestrictFlag,
) -> list[RestrictRule]:
    if mask_tok is not None:
        ctx.warning(mask_tok, "'mask' is ignored for a host name: each address is a host rule")
    found = [
        a
        for a in ctx.resolve(target.text, family)
        if family is None or (AF_INET if a.version == 4 else AF_INET6) == family
    ]
    if not found:
        ctx.warning(
            target,
            f"'{target.text}' does not resolve now; this restrict rule is skipped",
            "use an address, since host names are resolved only at start-up",
        )
        return []
    return [
        RestrictRule(
            ipaddress.ip_network(f"{a}/{a.max_prefixlen}"), flags, hostname=target.text
        )
        for a in found
    ]


def handle_interface(ctx: Context, head: Token, args: list[Token]) -> None:
    action_tok = ctx.need(args, 0, head, "action (listen, ignore or drop)")
    if action_tok is None:
        return
    if action_tok.text not in INTERFACE_ACTIONS:
        ctx.unknown(action_tok, "interface action", INTERFACE_ACTIONS)
        return
    what = ctx.need(args, 1, action_tok, "interface, address or class")
    if what is None:
        return
    ctx.no_more(args, 2, head.text)
    rule = _interface_rule(ctx, action_tok.text, what)
    if rule is not None and ctx.line_ok:
        ctx.b.interfaces.append(rule)


def handle_listen(ctx: Context, head: Token, args: list[Token]) -> None:
    """pyntpd's `listen ADDRESS`: shorthand for `interface listen ADDRESS`."""
    what = ctx.need(args, 0, head, "address")
    if what is None:
        return
    ctx.no_more(args, 1, "listen")
    try:
        addr = ipaddress.ip_address(what.text)
    except ValueError:
        ctx.error(what, f"'{what.text}' is not an IP address")
        return
    if ctx.line_ok:
        net = ipaddress.ip_network(f"{str(addr).split('%', 1)[0]}/{addr.max_prefixlen}")
        ctx.b.interfaces.append(InterfaceRule("listen", "address", None, net, head.loc))


def _interface_rule(ctx: Context, action: str, what: Token) -> InterfaceRule | None:
    act = INTERFACE_ACTIONS[action]
    text = what.text
    if text in INTERFACE_CLASSES:
        return InterfaceRule(act, INTERFACE_CLASSES[text], location=what.loc)
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        net = None
    if net is not None:
        return InterfaceRule(act, "address", network=net, location=what.loc)
    if ":" in text.split("/")[0] or re.fullmatch(r"[0-9./]+", text):
        ctx.error(what, f"'{text}' is not a valid address or network")
        return None
    if not _IFNAME.fullmatch(text):
        ctx.error(what, f"'{text}' is not a valid interface name")
        return None
    return InterfaceRule(act, "name", name=text, location=what.loc)
