"""`pyntpd --check`: parse diagnostics plus checks that need the outside world (DNS) or look
at the configuration as a whole rather than line by line.
"""

from __future__ import annotations

import ipaddress
import os

from . import files
from .diagnostics import Diagnostic, DiagnosticSink, Location
from .model import NtpConfig
from .parser import parse_file

# RFC 8633 §3.2: with four sources one falseticker can be outvoted.
RECOMMENDED_SOURCES = 4


def _is_literal(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def check_config(
    config: NtpConfig, *, resolve: files.Resolver = files.resolve, filename: str = "ntp.conf"
) -> list[Diagnostic]:
    """Whole-configuration checks. Server names are resolved here (and only here) so that
    an administrator learns about a typo in a host name before the daemon starts."""
    sink = DiagnosticSink()
    resolved: dict[tuple[str, int | None], bool] = {}
    for server in config.servers:
        if _is_literal(server.address):
            continue
        key = (server.address.lower(), server.family)
        if key not in resolved:
            resolved[key] = bool(resolve(server.address, server.family))
            if not resolved[key]:
                sink.warning(
                    server.location,
                    f"{server.kind} '{server.address}' does not resolve now; pyntpd will retry",
                )

    where = config.servers[0].location if config.servers else Location(filename)
    usable = [s for s in config.servers if not s.noselect]
    if not usable and not config.local_clocks:
        sink.warning(where, "no time sources are configured; this server will never synchronise")
    elif usable and not any(s.kind == "pool" for s in usable) and len(usable) < RECOMMENDED_SOURCES:
        sink.warning(
            where,
            f"only {len(usable)} network time source(s); RFC 8633 §3.2 recommends at least "
            f"{RECOMMENDED_SOURCES} so that one bad source can be outvoted",
            "add servers, or use 'pool'",
        )

    defaults = {r.network.version for r in config.restrictions if r.is_default and r.network}
    for version in (4, 6):
        if version not in defaults:
            flag = "" if version == 4 else "-6 "
            sink.warning(
                Location(filename),
                f"no 'restrict {flag}default' line: every IPv{version} client may query this "
                "server's status (mode 6) and rate limiting is off",
                f"add 'restrict {flag}default kod limited nomodify notrap nopeer noquery'",
            )
    return sink.items


def check_file(
    path: str | os.PathLike[str],
    *,
    resolve: files.Resolver = files.resolve,
    read_file: files.ReadFile = files.read_file,
    file_mode: files.FileMode = files.file_mode,
    keys_file: str | None = None,
) -> list[Diagnostic]:
    """Everything `pyntpd --check` reports for a configuration file."""
    result = parse_file(
        path, resolve=resolve, read_file=read_file, file_mode=file_mode, keys_file=keys_file
    )
    diagnostics = list(result.diagnostics)
    if not any(d.file == os.fspath(path) and d.line == 0 and d.is_error for d in diagnostics):
        diagnostics += check_config(result.config, resolve=resolve, filename=os.fspath(path))
    return diagnostics
