"""Directives pyntpd refuses or ignores on purpose, each with the reason and the way out.

Refusals are errors because silently dropping them would leave the administrator believing
a protection (or a mode) is active when it is not.
"""

from __future__ import annotations

from .context import Context
from .lexer import Token

AUTOKEY_WHY = "Autokey is broken by design (CVE-2015-7701 class, RFC 8633 §3.5)"
AUTOKEY_FIX = "use NTS ('server HOST nts') or symmetric keys"

MANYCAST_WHY = (
    "manycast mobilises an association with whichever host answers a multicast solicitation, "
    "and its servers answer anyone who asks on the group"
)
MANYCAST_FIX = (
    "use 'pool' lines to find servers, and 'broadcast ADDRESS key N' to serve a segment"
)

MODE7_WHY = (
    "pyntpd never answers mode 7 (ntpdc): it was the monlist amplification vector "
    "(CVE-2013-5211)"
)
MODE7_FIX = "use ntpq (mode 6) for monitoring"

AUTOKEY_DIRECTIVES = ("crypto", "revoke", "automax", "ident")
MANYCAST_DIRECTIVES = ("manycastserver", "manycastclient")

# Accepted and ignored, with the reason given to the administrator.
IGNORED_DIRECTIVES: dict[str, str] = {
    "saveconfigdir": (
        "pyntpd never saves its configuration on remote request (CVE-2015-7851 class)"
    ),
    "saveconfig": "pyntpd never saves its configuration on remote request (CVE-2015-7851 class)",
    "trap": "pyntpd sends no mode 6 traps",
    "logconfig": "pyntpd does not implement ntpd's syslog classes",
    "setvar": "pyntpd does not publish extra system variables",
    "keysdir": "keysdir only served Autokey, which pyntpd does not support",
    "phone": "modem reference clocks are not supported",
    "device": "reference clock devices are not supported",
    "rlimit": "pyntpd does not change its resource limits",
    "calldelay": "modem reference clocks are not supported",
    "dscp": "pyntpd does not set DSCP",
    "mdnstries": "mDNS registration is not supported",
    "leapsmearinterval": "leap smearing is not supported",
    "pollskewlist": "poll skewing is not supported",
    "reset": "counter resets are a run-time operation",
    "nonvolatile": "the driftfile write threshold is fixed",
    "tick": "pyntpd uses the kernel's tick",
}


def autokey(ctx: Context, tok: Token) -> None:
    ctx.error(tok, f"'{tok.text}' is not supported: {AUTOKEY_WHY}", AUTOKEY_FIX)


def handle_refused(ctx: Context, head: Token, args: list[Token]) -> None:
    name = head.text
    if name in AUTOKEY_DIRECTIVES:
        autokey(ctx, head)
    elif name in MANYCAST_DIRECTIVES:
        ctx.error(head, f"'{name}' is not supported: {MANYCAST_WHY}", MANYCAST_FIX)


def handle_ignored(ctx: Context, head: Token, args: list[Token]) -> None:
    ctx.warning(head, f"'{head.text}' ignored: {IGNORED_DIRECTIVES[head.text]}")
