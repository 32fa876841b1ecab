"""`nts`: the NTS-KE server and the NTS client's trust anchors, in NTPsec's syntax.

    nts enable | disable
    nts cert FILE          the certificate chain presented by the NTS-KE server
    nts key FILE           its private key
    nts ca FILE|DIR        CA certificates that NTS-KE servers are checked against
                           (default: the system's)
    nts cookie FILE        where the server's cookie keys are kept (NTPsec's name)
    nts mintls / maxtls / tlsciphersuites / tlsecdhcurves / aead   accepted; see below
    nts port N             pyntpd extension: the NTS-KE listen port (default 4460)
    nts listen ADDRESS     pyntpd extension: the NTS-KE listen address (default all)

Options may share a line (`nts enable cert /x key /y`) or be spread over several; the
last word wins. Only TLS 1.3 and AEAD_AES_SIV_CMAC_256 are implemented, so `mintls`/
`maxtls` below 1.3 and other AEADs are refused rather than silently ignored.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from .context import Context
from .files import FileMode
from .lexer import Token
from .model import NtsConfig

PATH_OPTIONS = {"cert": "certificate file", "key": "private key file",
                "ca": "CA file or directory", "cookie": "cookie key file"}
TLS_OPTIONS = ("mintls", "maxtls", "tlsciphersuites", "tlsecdhcurves")
NTS_OPTIONS = ("enable", "disable", *PATH_OPTIONS, *TLS_OPTIONS, "aead", "port", "listen")
_TLS13 = {"tls1.3", "tlsv1.3", "1.3"}


def handle_nts(ctx: Context, head: Token, args: list[Token]) -> None:
    current = ctx.b.scalars.get("nts")
    config = current if isinstance(current, NtsConfig) else NtsConfig()
    changes: dict[str, object] = {}
    if not args:
        ctx.error(ctx.after(head), "missing option after 'nts'",
                  "e.g. 'nts enable', 'nts cert FILE', 'nts key FILE', 'nts ca FILE'")
    i = 0
    while i < len(args):
        tok = args[i]
        name = tok.text
        i += 1
        if name in ("enable", "disable"):
            changes["enabled"] = name == "enable"
        elif name in PATH_OPTIONS:
            value = ctx.need(args, i, tok, PATH_OPTIONS[name])
            i += 1
            path = None if value is None else ctx.path_value(value, PATH_OPTIONS[name])
            if path is not None:
                changes[name] = path
                ctx.b.scalars[f"nts_{name}_token"] = value  # where to point at its mode
        elif name in ("mintls", "maxtls"):
            value = ctx.need(args, i, tok, "TLS version")
            i += 1
            if value is not None and value.text.lower() not in _TLS13:
                ctx.error(value, f"'nts {name} {value.text}': NTS needs TLS 1.3 and pyntpd "
                          "speaks nothing else", f"write 'nts {name} TLS1.3' or drop it")
        elif name in TLS_OPTIONS:
            if ctx.need(args, i, tok, name) is not None:
                ctx.warning(tok, f"'nts {name}' ignored: pyntpd uses OpenSSL's TLS 1.3 defaults")
            i += 1
        elif name == "aead":
            value = ctx.need(args, i, tok, "AEAD algorithm")
            i += 1
            if value is not None and value.text.upper() not in ("AES_SIV_CMAC_256",
                                                                "AEAD_AES_SIV_CMAC_256"):
                ctx.error(value, f"AEAD '{value.text}' is not supported",
                          "pyntpd implements AES_SIV_CMAC_256 only; drop the option")
        elif name == "port":
            port = ctx.int_arg(args, i, tok, "NTS-KE port", 1, 65535)
            i += 1
            if port is not None:
                changes["port"] = port
        elif name == "listen":
            value = ctx.need(args, i, tok, "address")
            i += 1
            if value is not None:
                try:
                    changes["listen"] = str(ipaddress.ip_address(value.text))
                except ValueError:
                    ctx.error(value, f"'{value.text}' is not an IP address",
                              "write the address to listen on, e.g. 127.0.0.1 or ::1")
        else:
            ctx.unknown(tok, "option", NTS_OPTIONS, "for 'nts'")
            break
    if ctx.line_ok:
        ctx.b.scalars["nts"] = replace(config, **changes)  # type: ignore[arg-type]
        ctx.b.scalars.setdefault("nts_token", head)


def check_nts(ctx: Context, file_mode: FileMode) -> NtsConfig:
    """The final `nts` settings, with the errors only the whole file can reveal, and a
    warning for each secret others can read (as for the keys file)."""
    value = ctx.b.scalars.get("nts")
    config = value if isinstance(value, NtsConfig) else NtsConfig()
    head = ctx.b.scalars.get("nts_token")
    if config.enabled and isinstance(head, Token):
        missing = [name for name in ("cert", "key") if getattr(config, name) is None]
        if missing:
            ctx.error(head, f"'nts enable' needs {' and '.join(missing)}",
                      "add 'nts cert /etc/pyntpd/cert.pem' and 'nts key /etc/pyntpd/key.pem'")
    if config.enabled and isinstance(head, Token):
        _check_secret(ctx, config.key, ctx.b.scalars.get("nts_key_token", head), file_mode,
                      "NTS private key", SECRET_KEY_EXPOSED,
                      "anyone who can read it can pose as this NTS-KE server")
        _check_secret(ctx, config.cookie, ctx.b.scalars.get("nts_cookie_token", head),
                      file_mode, "NTS cookie key file", COOKIE_KEYS_EXPOSED,
                      "anyone who can read it can open every client's cookies, so read "
                      "their keys; pyntpd writes it again with mode 0600 at start")
    return config


# The TLS key may be shared with a group (Debian's ssl-cert: 0640); the cookie keys are the
# daemon's own and nobody else's business.
SECRET_KEY_EXPOSED = 0o027
COOKIE_KEYS_EXPOSED = 0o077


def _check_secret(ctx: Context, path: str | None, at: object, file_mode: FileMode,
                  what: str, exposed: int, why: str) -> None:
    mode = None if path is None else file_mode(path)
    if path is None or mode is None or not mode & exposed:
        return
    readers = "others" if mode & 0o007 else "its group"
    verb = "readable" if mode & 0o044 & exposed else "writable"
    location = at if isinstance(at, Token) else None
    if location is not None:
        ctx.warning(location, f"{what} {path} is {verb} by {readers} (mode {mode & 0o777:04o}); "
                    f"{why}", f"chmod 600 {path}")
