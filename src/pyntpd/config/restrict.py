"""`restrict`, `interface`/`nic` and `listen`: who may talk to us, and where we listen.

`restrict` semantics follow ntpd 4.2.8 (ntp_config.c, config_access): an address without
`mask` is a single host; `restrict default` without -4/-6 sets both the IPv4 and the IPv6
default; a host name is resolved once, at parse time, into one host rule per address.

These lines are the server's exposure, so they fail closed. A flag ntpd knows and pyntpd
has no use for is accepted with a warning naming it, and the rest of the line applies. A
line pyntpd cannot honour (an unknown word, an address or mask it cannot read, a host name
that does not resolve when dropping the rule would open up more than the defaults) is a
fatal error: the daemon does not start, and a reload keeps the running configuration.
ntpd drops such a line and runs without it, however open that leaves it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from pyntpd.proto.access_types import RESTRICT_KEYWORDS, RestrictFlag, RestrictRule

from .assoc import is_host_name, parse_address, unbracket
from .context import Context
from .lexer import Token
from .model import AF_INET, AF_INET6, InterfaceAction, InterfaceMatch, InterfaceRule, IPNetwork

# ntpd flags accepted without effect, and why.
IGNORED_FLAGS = {
    "noepeer": "pyntpd never creates ephemeral peer associations",
    "epeer": "pyntpd never creates ephemeral peer associations",
    "flake": "flake is a testing aid that drops packets",
}
IGNORED_VALUE_FLAGS = {
    "ippeerlimit": "pyntpd never creates ephemeral peer associations",
    "serverresponse": "server response fuzzing is not supported",
}
ALL_FLAGS = [*RESTRICT_KEYWORDS, *IGNORED_FLAGS, *IGNORED_VALUE_FLAGS, "mask"]
# Flags that change nothing in pyntpd whether given or not (it never takes mode 6 writes and
# sends no traps), that only say how a rule matches, or that add a service (MS-SNTP
# signing) rather than restrict one: left out when judging whether a rule that cannot be
# applied would have restricted anything.
_NO_RESTRICTION = (RestrictFlag.NOMODIFY | RestrictFlag.NOTRAP | RestrictFlag.LOWPRIOTRAP
                   | RestrictFlag.NTPPORT | RestrictFlag.SOURCE | RestrictFlag.MSSNTP)

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


@dataclass(frozen=True, slots=True)
class _Mask:
    prefix: int | None  # a contiguous mask
    value: int  # the mask itself


def _mask(ctx: Context, tok: Token, version: int) -> _Mask | None:
    tok = unbracket(ctx, tok)
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
        ctx.warning(
            tok,
            f"mask '{tok.text}' is not contiguous: the rule matches the addresses whose bits "
            "under the mask equal the address's, as in ntpd",
            "write a prefix mask (e.g. 255.255.255.0) unless this is what you mean",
        )
        return _Mask(None, value)
    return _Mask(bits - inverted.bit_length(), value)


def _network(ctx: Context, addr_tok: Token, net: IPNetwork, given: str) -> IPNetwork:
    if int(net.network_address) != int(ipaddress.ip_address(given)):
        ctx.warning(
            addr_tok,
            f"'{given}' has host bits set outside the mask; the rule covers {net}",
        )
    return net


def handle_restrict(ctx: Context, head: Token, args: list[Token]) -> None:
    rules = _restrict_rules(ctx, head, args)
    if ctx.line_ok:
        for rule in rules:
            _add_rule(ctx, rule)
    else:
        ctx.fail_closed("restrict")


def _restrict_rules(ctx: Context, head: Token, args: list[Token]) -> list[RestrictRule]:
    family: int | None = None
    i = 0
    while i < len(args) and args[i].text in ("-4", "-6"):
        family = AF_INET if args[i].text == "-4" else AF_INET6
        i += 1
    target = ctx.need(args, i, head, "address, 'default' or 'source'")
    if target is None:
        return []
    target = unbracket(ctx, target)
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
            plain = str(addr).split("%", 1)[0]
            mask = None if mask_tok is None else _mask(ctx, mask_tok, addr.version)
            if mask is not None and mask.prefix is None:
                masked = ipaddress.ip_address(int(ipaddress.ip_address(plain)) & mask.value)
                net = ipaddress.ip_network(f"{masked}/{addr.max_prefixlen}")
                rules.append(RestrictRule(net, flags, mask=mask.value))
            else:
                prefix = addr.max_prefixlen if mask is None else mask.prefix
                net = ipaddress.ip_network(f"{plain}/{prefix}", strict=False)
                rules.append(RestrictRule(_network(ctx, target, net, plain), flags))
        elif ok and is_host_name(text) and ctx.line_ok:
            rules.extend(_resolve_rules(ctx, target, family, mask_tok, flags))
    return rules


def handle_delrestrict(ctx: Context, head: Token, args: list[Token]) -> None:
    """`delrestrict ADDRESS [mask MASK]` (ntpd 4.2.8p18): removes the entry an earlier
    `restrict` line made for exactly that address and mask; ntpd applies restrict lines in
    order, so a later `restrict` for it applies again."""
    if args and args[0].text == "source":
        ctx.warning(head, "'delrestrict source' only removes run-time entries; ignored")
        return
    rules = _restrict_rules(ctx, head, args)
    if ctx.line_ok:
        for rule in rules:
            key = (rule.network, rule.mask, 0)
            index = ctx.b.restrict_index.pop(key, None)
            if index is None:
                ctx.warning(head, f"no 'restrict {rule.describe()}' line before this one; "
                            "nothing to remove")
                continue
            del ctx.b.restrictions[index]
            ctx.b.restrict_index = {k: i - (i > index) for k, i in ctx.b.restrict_index.items()}
    else:
        ctx.fail_closed("delrestrict")


def _add_rule(ctx: Context, new: RestrictRule) -> None:
    """ntpd keeps one entry per (address, mask, ntpport): a repeated line adds its flags to
    the existing entry. `restrict source` instead replaces the previous template."""
    rules = ctx.b.restrictions
    key = (new.network, new.mask, (new.flags & RestrictFlag.NTPPORT).value)
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
    if mask_tok is not None and not _is_host_mask(mask_tok.text):
        ctx.warning(mask_tok, "'mask' is ignored for a host name: each address is a host rule, "
                    "as in ntpd")
    found = [
        a
        for a in ctx.resolve(target.text, family)
        if family is None or (AF_INET if a.version == 4 else AF_INET6) == family
    ]
    if not found:
        ctx.b.unresolved_restricts.append((target, family, flags))
        return []
    return [
        RestrictRule(
            ipaddress.ip_network(f"{a}/{a.max_prefixlen}"), flags, hostname=target.text
        )
        for a in found
    ]


def _is_host_mask(text: str) -> bool:
    try:
        mask = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return int(mask) == (1 << mask.max_prefixlen) - 1


def check_unresolved(ctx: Context) -> None:
    """A `restrict NAME` whose name does not resolve now. Leaving it out cannot make this
    server more open than the file says when it restricts nothing beyond the default rule of
    its families (the usual `restrict POOLHOST nomodify notrap noquery` under a default that
    says at least as much): a warning. Otherwise it is a fatal error."""
    defaults = {r.network.version: r.flags for r in ctx.b.restrictions
                if r.is_default and r.network is not None}
    for target, family, flags in ctx.b.unresolved_restricts:
        versions = [4, 6] if family is None else [4 if family == AF_INET else 6]
        wanted = flags & ~_NO_RESTRICTION
        missing = [v for v in versions
                   if wanted & ~defaults.get(v, RestrictFlag.NONE)]
        if not missing:
            ctx.warning(
                target,
                f"'{target.text}' does not resolve now; this restrict rule is skipped (it "
                "restricts nothing beyond 'restrict default')",
                "use an address, since host names are resolved only at start-up",
            )
            continue
        extra = " ".join(name for name, flag in RESTRICT_KEYWORDS.items()
                         if flag & wanted and any(not flag & defaults.get(v, RestrictFlag.NONE)
                                                  for v in missing))
        ctx.fatal(
            target,
            f"'{target.text}' does not resolve now, so its restrict rule ({extra}) cannot be "
            "applied",
            "use the host's address; pyntpd refuses to start with a restrict line it cannot "
            "honour, rather than run more open than this file says",
        )


def handle_interface(ctx: Context, head: Token, args: list[Token]) -> None:
    rule = _interface_line(ctx, head, args)
    if rule is not None and ctx.line_ok:
        ctx.b.interfaces.append(rule)
    elif not ctx.line_ok:
        ctx.fail_closed(head.text)


def _interface_line(ctx: Context, head: Token, args: list[Token]) -> InterfaceRule | None:
    action_tok = ctx.need(args, 0, head, "action (listen, ignore or drop)")
    if action_tok is None:
        return None
    if action_tok.text not in INTERFACE_ACTIONS:
        ctx.unknown(action_tok, "interface action", INTERFACE_ACTIONS)
        return None
    what = ctx.need(args, 1, action_tok, "interface, address or class")
    if what is None:
        return None
    ctx.no_more(args, 2, head.text)
    return _interface_rule(ctx, action_tok.text, unbracket(ctx, what))


def handle_listen(ctx: Context, head: Token, args: list[Token]) -> None:
    """pyntpd's `listen ADDRESS`: shorthand for `interface listen ADDRESS`."""
    what = ctx.need(args, 0, head, "address")
    if what is not None:
        what = unbracket(ctx, what)
        ctx.no_more(args, 1, "listen")
        try:
            addr = ipaddress.ip_address(what.text)
        except ValueError:
            ctx.error(what, f"'{what.text}' is not an IP address")
        else:
            if ctx.line_ok:
                net = ipaddress.ip_network(f"{str(addr).split('%', 1)[0]}/{addr.max_prefixlen}")
                ctx.b.interfaces.append(InterfaceRule("listen", "address", None, net, head.loc))
    if not ctx.line_ok:
        ctx.fail_closed("listen")


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
