"""`pyntpd --check`: parse diagnostics plus the basic whole-configuration findings of the
audit engine (config.audit): server names that do not resolve, too few sources, no
`restrict default`. `pyntpctl check --audit` reports the rest of the audit too.

Names are looked up all at once with one deadline (`RESOLVE_BUDGET`), so that a check
always finishes in seconds and says which names the resolver left unanswered: the file is
parsed once to learn its names (server lines and `restrict HOSTNAME`), they are resolved
concurrently, and it is parsed again against those answers.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable

from . import files
from .audit import RECOMMENDED_SOURCES, Finding, audit, review
from .diagnostics import Diagnostic
from .model import NtpConfig, ParseResult
from .parser import parse_file

__all__ = ["RECOMMENDED_SOURCES", "RESOLVE_BUDGET", "audit_file", "check_config", "check_file",
           "look_up"]

# s: the longest a check waits for the resolver, for all names together. glibc gives a
# silent nameserver 5 s before it retries, so an answer that needs a retry is not waited for:
# the name is reported as pending, and the daemon retries it on its own schedule.
RESOLVE_BUDGET = 4.0


def _server_names(config: NtpConfig) -> list[files.Query]:
    names = []
    for server in config.servers:
        try:
            ipaddress.ip_address(server.address)
        except ValueError:
            names.append((server.address, server.family))
    return names


class _Recorder:
    """A resolver that answers nothing and remembers what it was asked."""

    def __init__(self) -> None:
        self.queries: list[files.Query] = []

    def __call__(self, host: str, family: int | None) -> list[files.IPAddress]:
        self.queries.append((host, family))
        return []


def look_up(parse: Callable[[files.Resolver], ParseResult], resolve: files.Resolver,
            budget: float = RESOLVE_BUDGET) -> tuple[ParseResult, files.Lookups]:
    """Parse with every name the configuration uses resolved at once, in `budget` s."""
    recorder = _Recorder()
    first = parse(recorder)
    lookups = files.resolve_all(recorder.queries + _server_names(first.config), resolve,
                                budget)
    return parse(lookups), lookups


def check_config(
    config: NtpConfig, *, resolve: files.Resolver = files.resolve, filename: str = "ntp.conf",
    budget: float = RESOLVE_BUDGET,
) -> list[Diagnostic]:
    """Whole-configuration checks. Server names are resolved here (and only here) so that
    an administrator learns about a typo in a host name before the daemon starts."""
    lookups = files.resolve_all(_server_names(config), resolve, budget)
    return [f.as_diagnostic() for f in review(config, resolve=lookups, filename=filename,
                                              full=False)]


def audit_file(
    path: str | os.PathLike[str],
    *,
    full: bool,
    resolve: files.Resolver = files.resolve,
    read_file: files.ReadFile = files.read_file,
    file_mode: files.FileMode = files.file_mode,
    keys_file: str | None = None,
    budget: float = RESOLVE_BUDGET,
) -> tuple[list[Finding], files.Lookups]:
    """Every finding for a configuration file (`full`: the security review too), and the
    lookups it made (which names got no answer in time)."""
    result, lookups = look_up(
        lambda resolver: parse_file(path, resolve=resolver, read_file=read_file,
                                    file_mode=file_mode, keys_file=keys_file),
        resolve, budget)
    return audit(result, resolve=lookups, filename=os.fspath(path), full=full), lookups


def check_file(
    path: str | os.PathLike[str],
    *,
    resolve: files.Resolver = files.resolve,
    read_file: files.ReadFile = files.read_file,
    file_mode: files.FileMode = files.file_mode,
    keys_file: str | None = None,
    budget: float = RESOLVE_BUDGET,
) -> list[Diagnostic]:
    """Everything `pyntpd --check` reports for a configuration file."""
    findings, _ = audit_file(path, full=False, resolve=resolve, read_file=read_file,
                             file_mode=file_mode, keys_file=keys_file, budget=budget)
    return [f.as_diagnostic() for f in findings]
