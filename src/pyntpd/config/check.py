"""`pyntpd --check`: parse diagnostics plus the basic whole-configuration findings of the
audit engine (config.audit): server names that do not resolve, too few sources, no
`restrict default`. `pyntpctl check --audit` reports the rest of the audit too.
"""

from __future__ import annotations

import os

from . import files
from .audit import RECOMMENDED_SOURCES, audit, review
from .diagnostics import Diagnostic
from .model import NtpConfig
from .parser import parse_file

__all__ = ["RECOMMENDED_SOURCES", "check_config", "check_file"]


def check_config(
    config: NtpConfig, *, resolve: files.Resolver = files.resolve, filename: str = "ntp.conf"
) -> list[Diagnostic]:
    """Whole-configuration checks. Server names are resolved here (and only here) so that
    an administrator learns about a typo in a host name before the daemon starts."""
    return [f.as_diagnostic() for f in review(config, resolve=resolve, filename=filename,
                                              full=False)]


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
    findings = audit(result, resolve=resolve, filename=os.fspath(path), full=False)
    return [f.as_diagnostic() for f in findings]
