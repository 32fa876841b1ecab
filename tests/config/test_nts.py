"""The `nts` directive (NTPsec's syntax) and `server ... nts ntsport N`."""

from __future__ import annotations

import pytest

from pyntpd.config.model import NtsConfig

from .helpers import messages, only_error, only_warning, parse


def test_no_nts_line_leaves_the_server_off() -> None:
    assert parse("").config.nts == NtsConfig()


def test_ntpsec_style_lines_configure_the_server() -> None:
    result = parse("nts enable\nnts cert /etc/ssl/ntp.pem\nnts key /etc/ssl/ntp.key\n"
                   "nts ca /etc/ssl/certs\nnts cookie /var/lib/pyntpd/keys\n")
    assert not result.diagnostics, messages(result)
    assert result.config.nts == NtsConfig(True, "/etc/ssl/ntp.pem", "/etc/ssl/ntp.key",
                                          "/etc/ssl/certs", "/var/lib/pyntpd/keys")


def test_options_may_share_one_line_and_the_last_word_wins() -> None:
    result = parse("nts enable cert /c key /k disable port 4461 listen ::1\nnts enable\n")
    assert not result.diagnostics, messages(result)
    assert result.config.nts == NtsConfig(True, "/c", "/k", port=4461, listen="::1")


def test_enable_without_certificate_and_key_is_an_error_with_a_fix() -> None:
    error = only_error(parse("nts enable\n"))
    assert ":1:1: error: 'nts enable' needs cert and key; add 'nts cert" in error


def test_a_client_needs_no_nts_line() -> None:
    result = parse("server time.example.org nts iburst\n")
    assert not result.diagnostics
    (server,) = result.config.servers
    assert server.nts and server.nts_port == 4460


def test_ntsport_names_the_nts_ke_port() -> None:
    (server,) = parse("server 192.0.2.1 nts ntsport 4461\n").config.servers
    assert server.nts_port == 4461


@pytest.mark.parametrize("line, text", [
    ("nts mintls TLS1.2", "NTS needs TLS 1.3"),
    ("nts aead AES_SIV_CMAC_512", "not supported"),
    ("nts port 0", "out of range"),
    ("nts listen somewhere", "not an IP address"),
    ("nts cert", "missing certificate file"),
    ("nts bogus", "unknown option 'bogus'"),
    ("nts", "missing option"),
])
def test_bad_nts_lines_are_errors(line: str, text: str) -> None:
    assert text in only_error(parse(line + "\n"))


def test_tls_tuning_options_are_accepted_and_said_to_be_ignored() -> None:
    warning = only_warning(parse("nts tlsciphersuites TLS_AES_256_GCM_SHA384\n"))
    assert "ignored" in warning


def test_tls13_and_the_only_aead_are_accepted_silently() -> None:
    result = parse("nts mintls TLS1.3 maxtls TLS1.3 aead AES_SIV_CMAC_256\n")
    assert not result.diagnostics, messages(result)


def test_a_line_with_an_error_changes_nothing() -> None:
    result = parse("nts cert /c key /k\nnts enable port 99999\n")
    assert result.config.nts == NtsConfig(False, "/c", "/k")


@pytest.mark.parametrize("line", ["server 192.0.2.1 nts key 1", "peer 192.0.2.1 nts key 1"])
def test_nts_with_a_key_or_on_a_peer_is_an_error(line: str) -> None:
    result = parse(line + "\n")
    assert any("'nts' cannot be combined" in str(d) for d in result.errors), messages(result)
    assert not result.config.servers


NTS_FILES = {"/etc/ssl/ntp.pem": "cert", "/etc/ssl/ntp.key": "key",
             "/var/lib/pyntpd/keys": "cookies"}
NTS_LINE = "nts enable cert /etc/ssl/ntp.pem key /etc/ssl/ntp.key cookie /var/lib/pyntpd/keys\n"


def test_a_private_key_and_cookie_keys_readable_by_others_are_each_warned_about() -> None:
    result = parse(NTS_LINE, files=NTS_FILES, mode=0o100644)
    assert not result.errors
    key, cookie = (str(d) for d in result.diagnostics)
    assert key.startswith("ntp.conf:1:38: warning: NTS private key /etc/ssl/ntp.key is "
                          "readable by others (mode 0644); anyone who can read it can pose")
    assert key.endswith("chmod 600 /etc/ssl/ntp.key")
    assert cookie.startswith("ntp.conf:1:62: warning: NTS cookie key file "
                             "/var/lib/pyntpd/keys is readable by others (mode 0644)")


def test_a_private_key_its_group_may_read_is_fine_but_cookie_keys_are_not() -> None:
    result = parse(NTS_LINE, files=NTS_FILES, mode=0o100640)
    (cookie,) = (str(d) for d in result.diagnostics)
    assert "NTS cookie key file /var/lib/pyntpd/keys is readable by its group (mode 0640)" \
        in cookie


def test_secrets_only_their_owner_reads_get_no_warning() -> None:
    assert not parse(NTS_LINE, files=NTS_FILES, mode=0o100600).diagnostics
