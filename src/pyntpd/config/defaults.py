"""The configuration pyntpd uses when started without one: a real ntp.conf, parsed by the
same parser, so that what `pyntpd --show-default` would print is exactly what runs."""

from __future__ import annotations

import functools

from .model import IPAddress, NtpConfig
from .parser import parse_text

# Where ntpd looks for its configuration when no -c is given.
DEFAULT_CONFIG = "/etc/ntp.conf"

DEFAULT_CONFIG_TEXT = """\
# pyntpd embedded default configuration.

# Four servers from the pool, replaced as they fail.
pool pool.ntp.org iburst

# Last resort when no network source is reachable: the local clock at stratum 10, so that
# any real source (stratum 1-4 in practice) is always preferred.
server 127.127.1.0
fudge 127.127.1.0 stratum 10

# Serve time to anyone, rate-limited; no status queries, no changes, no peering.
restrict default kod limited nomodify notrap nopeer noquery
restrict -6 default kod limited nomodify notrap nopeer noquery
# Local administration (ntpq) is allowed.
restrict 127.0.0.1
restrict -6 ::1
# The pool's servers must be able to answer us (they are not peers).
restrict source nomodify notrap noquery

driftfile /var/lib/pyntpd/drift
"""


def _no_dns(host: str, family: int | None) -> list[IPAddress]:
    return []


def _no_files(path: str) -> bytes:
    raise FileNotFoundError(path)


@functools.cache
def load_default() -> NtpConfig:
    """The embedded default, parsed without touching DNS or the file system."""
    result = parse_text(
        DEFAULT_CONFIG_TEXT,
        "<default>",
        resolve=_no_dns,
        read_file=_no_files,
        file_mode=lambda path: None,
    )
    if result.has_errors:  # a packaging bug, not a user error
        raise AssertionError("; ".join(str(d) for d in result.diagnostics))
    return result.config
