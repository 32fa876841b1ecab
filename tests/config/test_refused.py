from __future__ import annotations

import pytest

from .helpers import only_error, only_warning, parse

AUTOKEY = (
    "is not supported: Autokey is broken by design (CVE-2015-7701 class, RFC 8633 §3.5); "
    "use NTS ('server HOST nts') or symmetric keys"
)
MANYCAST = (
    "is not supported: manycast mobilises an association with whichever host answers a "
    "multicast solicitation, and its servers answer anyone who asks on the group; use 'pool' "
    "lines to find servers, and 'broadcast ADDRESS key N' to serve a segment"
)


@pytest.mark.parametrize("line", ["crypto", "crypto pw secret", "revoke 16", "automax 12",
                                  "ident foo"])
def test_autokey_directive_is_refused_with_the_reason(line):
    name = line.split()[0]
    assert only_error(parse(line)) == f"ntp.conf:1:1: error: '{name}' {AUTOKEY}"


def test_autokey_server_option_is_refused_with_the_reason():
    assert only_error(parse("server a.example autokey")) == (
        f"ntp.conf:1:18: error: 'autokey' {AUTOKEY}"
    )


@pytest.mark.parametrize("line", ["manycastserver 239.255.254.254",
                                  "manycastclient 239.255.254.254"])
def test_manycast_is_refused_with_the_reason(line):
    name = line.split()[0]
    assert only_error(parse(line)) == f"ntp.conf:1:1: error: '{name}' {MANYCAST}"


def test_enable_mode7_is_refused_pointing_at_monlist():
    assert only_error(parse("enable mode7")) == (
        "ntp.conf:1:8: error: 'enable mode7' is refused: pyntpd never answers mode 7 (ntpdc): "
        "it was the monlist amplification vector (CVE-2013-5211); use ntpq (mode 6) for "
        "monitoring"
    )


def test_saveconfigdir_is_ignored_citing_the_remote_config_advisory():
    assert only_warning(parse("saveconfigdir /var/lib/ntp/saved")) == (
        "ntp.conf:1:1: warning: 'saveconfigdir' ignored: pyntpd never saves its configuration "
        "on remote request (CVE-2015-7851 class)"
    )


def test_trap_is_ignored():
    assert "'trap' ignored: pyntpd sends no mode 6 traps" in only_warning(parse("trap 192.0.2.9"))


def test_refused_line_does_not_stop_the_rest():
    result = parse("crypto\nserver a.example\n")
    assert len(result.config.servers) == 1
