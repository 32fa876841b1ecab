from __future__ import annotations

import socket

import pytest

from pyntpd.config import LocalClock, ServerConfig, parse_text

from .helpers import FakeResolver, messages, only_error, only_warning, parse


def _server(text: str) -> ServerConfig:
    result = parse(text)
    assert not result.diagnostics, messages(result)
    (server,) = result.config.servers
    return server


def test_server_defaults_match_ntpd():
    s = _server("server time.example.org")
    assert s == ServerConfig(kind="server", address="time.example.org")
    assert (s.port, s.minpoll, s.maxpoll, s.version, s.key, s.family) == (123, 6, 10, 4, None, None)


def test_server_location_points_at_the_address():
    s = _server("\n  server time.example.org")
    assert (s.location.file, s.location.line, s.location.col) == ("ntp.conf", 2, 10)


@pytest.mark.parametrize("flag", ["prefer", "iburst", "burst", "noselect", "true", "nts",
                                  "xleave"])
def test_server_flag_option_is_set(flag):
    assert getattr(_server(f"server a.example {flag}"), flag) is True


KEYS = {"/etc/ntp/keys": "5 SHA1 0123456789abcdef0123456789abcdef01234567\n7 MD5 secret\n"}


def test_server_value_options_are_parsed():
    result = parse(
        "keys /etc/ntp/keys\ntrustedkey 7\n"
        "server a.example minpoll 4 maxpoll 8 key 7 version 3 port 1123",
        files=KEYS,
    )
    assert not result.diagnostics, messages(result)
    (s,) = result.config.servers
    assert (s.minpoll, s.maxpoll, s.key, s.version, s.port) == (4, 8, 7, 3, 1123)


def test_pool_kind_is_recorded():
    assert _server("pool pool.ntp.org iburst").kind == "pool"


def test_peer_with_key_is_accepted():
    result = parse("keys /etc/ntp/keys\ntrustedkey 5\npeer 192.0.2.1 key 5", files=KEYS)
    assert [s.kind for s in result.config.servers] == ["peer"]
    assert not result.diagnostics, messages(result)


def test_peer_without_key_is_polled_as_a_server_with_a_warning_saying_why():
    """Puppet/Chef/Salt/Juju templates write `peer HOST` without a key: ntpsec polls such
    a line as a server, and so does pyntpd, instead of losing the source."""
    result = parse("peer 192.0.2.1 iburst minpoll 4")
    assert only_warning(result) == (
        "ntp.conf:1:1: warning: 'peer' without 'key': polled as 'server' (client mode), as "
        "ntpsec does; in symmetric mode a forged packet from the peer's address could set "
        "this clock (CVE-2016-1549 class); add 'key N' with a trusted key to keep symmetric "
        "mode"
    )
    (server,) = result.config.servers
    assert (server.kind, server.address, server.iburst, server.minpoll, server.key) == (
        "server", "192.0.2.1", True, 4, None)


def test_peer_with_key_0_is_a_peer_without_key():
    result = parse("peer 192.0.2.1 key 0")
    assert result.config.servers[0].kind == "server"
    assert len(result.warnings) == 2 and not result.errors


def test_dash_4_sets_the_family():
    assert _server("server -4 a.example").family == socket.AF_INET


def test_dash_6_sets_the_family():
    assert _server("pool -6 a.example").family == socket.AF_INET6


def test_literal_address_implies_its_family():
    assert _server("server 2001:db8::1").family == socket.AF_INET6


def test_family_flag_contradicting_the_address_is_an_error():
    assert "is an IPv4 address but '-6' was given" in only_error(parse("server -6 192.0.2.1"))


def test_family_flag_after_the_address_is_an_error():
    assert "'-4' must come before the address" in only_error(parse("server a.example -4"))


def test_unknown_option_suggests_the_closest():
    assert only_error(parse("server a.example perfer")) == (
        "ntp.conf:1:18: error: unknown option 'perfer' for 'server'; did you mean 'prefer'?"
    )


def test_line_with_an_error_is_not_configured():
    assert parse("server a.example perfer").config.servers == ()


# ntpd 4.2.8: create_peer_node resets minpoll < 3 or > 255 to 3 and maxpoll outside 0..17
# to 17; newpeer then clamps minpoll to <= 17, maxpoll to >= 3 (0: the default, 10), and
# minpoll to <= maxpoll.
@pytest.mark.parametrize(("options", "polls", "warning"), [
    ("minpoll 2", (3, 10), "minpoll 2 is out of range 3..17; using 3, as ntpd does"),
    ("minpoll -1", (3, 10), "minpoll -1 is out of range 3..17; using 3, as ntpd does"),
    ("minpoll 300", (3, 10), "minpoll 300 is out of range 3..17; using 3, as ntpd does"),
    ("minpoll 18 maxpoll 17", (17, 17),
     "minpoll 18 is out of range 3..17; using 17, as ntpd does"),
    ("maxpoll 18", (6, 17), "maxpoll 18 is out of range 3..17; using 17, as ntpd does"),
    ("maxpoll 0", (6, 10), "maxpoll 0 means the default, 10, in ntpd"),
    ("minpoll 3 maxpoll 2", (3, 3), "maxpoll 2 is out of range 3..17; using 3, as ntpd does"),
    ("minpoll 10 maxpoll 6", (6, 6),
     "minpoll 10 is greater than maxpoll 6; using minpoll 6, as ntpd does"),
    ("minpoll 12", (10, 10),
     "minpoll 12 is greater than maxpoll 10; using minpoll 10, as ntpd does"),
])
def test_poll_values_are_clamped_as_ntpd_clamps_them_with_a_warning(options, polls, warning):
    result = parse(f"server a.example {options} iburst")
    assert warning in only_warning(result)
    (server,) = result.config.servers
    assert (server.minpoll, server.maxpoll, server.iburst) == (*polls, True)


@pytest.mark.parametrize("value", ["0", "5", "254"])
def test_version_ntpd_takes_but_pyntpd_does_not_speak_becomes_4(value):
    result = parse(f"server a.example version {value}")
    assert f"version {value} is not an NTP version pyntpd speaks; sending 4" in only_warning(
        result)
    assert result.config.servers[0].version == 4


def test_version_ntpd_refuses_drops_the_line():
    assert "version 255 is out of range 1..4" in only_error(parse("server a.example version 255"))


def test_key_0_means_no_key_as_in_ntpd():
    result = parse("server a.example key 0")
    assert "'key 0' means no key in ntpd" in only_warning(result)
    assert result.config.servers[0].key is None


def test_key_above_65535_drops_the_line_rather_than_poll_unauthenticated():
    result = parse("server a.example key 65536")
    assert "key 65536 is out of range 1..65535" in only_error(result)
    assert result.config.servers == ()


def test_bracketed_ipv6_server_address_is_accepted_as_ntpd_does():
    (server,) = parse("server [2001:db8::1] iburst").config.servers
    assert (server.address, server.family, server.iburst) == (
        "2001:db8::1", socket.AF_INET6, True)


def test_port_zero_is_an_error():
    assert "port 0 is out of range 1..65535" in only_error(parse("server a.example port 0"))


def test_non_numeric_value_is_an_error():
    msg = only_error(parse("server a.example minpoll six"))
    assert "minpoll must be a number, not 'six'" in msg


def test_fractional_value_for_an_integer_is_an_error():
    assert "must be a whole number, not '6.5'" in only_error(parse("server a.example minpoll 6.5"))


def test_missing_value_points_after_the_option():
    assert only_error(parse("server a.example minpoll")) == (
        "ntp.conf:1:25: error: missing minpoll after 'minpoll'"
    )


def test_missing_address_is_an_error():
    assert only_error(parse("server")) == "ntp.conf:1:7: error: missing address after 'server'"


def test_bad_ipv4_address_is_an_error():
    assert "'192.0.2.300' is not a valid IPv4 address" in only_error(parse("server 192.0.2.300"))


def test_bad_ipv6_address_is_an_error():
    assert "is not a valid IPv6 address" in only_error(parse("server 2001:db8:::1"))


def test_bad_host_name_is_an_error():
    assert "'bad_host!' is not a valid host name" in only_error(parse("server bad_host!"))


def test_non_ascii_host_name_hints_at_punycode():
    assert "xn--" in only_error(parse("server 时间.example"))


def test_multicast_server_address_is_an_error():
    assert "'224.0.1.1' is not a unicast address" in only_error(parse("server 224.0.1.1"))


def test_duplicate_server_is_a_warning_and_ignored():
    result = parse("server a.example\nserver A.example iburst\n")
    assert only_warning(result) == (
        "ntp.conf:2:8: warning: duplicate server 'A.example' (first at ntp.conf:1:8); ignored"
    )
    assert len(result.config.servers) == 1


def test_same_host_on_another_port_is_not_a_duplicate():
    result = parse("server a.example\nserver a.example port 1123\n")
    assert len(result.config.servers) == 2


def test_autokey_option_is_refused():
    msg = only_error(parse("server a.example autokey"))
    assert "'autokey' is not supported: Autokey is broken by design" in msg


def test_xleave_on_a_pool_asks_for_interleaved_mode():
    (server,) = parse("pool pool.example xleave").config.servers
    assert server.xleave is True


KEYS_FOR_PEER = {"/etc/ntp/keys": "1 MD5 secret\n"}


def test_xleave_on_a_peer_is_accepted_with_a_warning():
    """Interleaved symmetric mode is not implemented: the line still loads, as in ntpd."""
    result = parse("keys /etc/ntp/keys\ntrustedkey 1\npeer 192.0.2.7 key 1 xleave",
                   files=KEYS_FOR_PEER)
    assert "option 'xleave' ignored" in only_warning(result)
    (peer,) = result.config.servers
    assert peer.kind == "peer" and peer.xleave is False


def test_ttl_option_consumes_its_value_with_a_warning():
    result = parse("server a.example ttl 3 iburst")
    assert "option 'ttl' ignored" in only_warning(result)
    assert result.config.servers[0].iburst


def test_server_host_names_are_not_resolved_by_the_parser():
    resolver = FakeResolver()
    parse_text("server a.example\npool b.example\n", resolve=resolver)
    assert resolver.calls == []


# -- reference clocks ---------------------------------------------------------------------


def test_local_clock_server_is_a_local_clock_with_ntpd_defaults():
    result = parse("server 127.127.1.0")
    assert not result.diagnostics
    assert result.config.servers == ()
    assert result.config.local_clocks == (LocalClock(unit=0, stratum=5, refid="LOCL", time1=0.0),)


def test_local_clock_unit_comes_from_the_address():
    assert parse("server 127.127.1.3").config.local_clocks[0].unit == 3


def test_fudge_sets_stratum_refid_and_time1():
    result = parse("server 127.127.1.0 prefer\nfudge 127.127.1.0 stratum 10 refid GPS time1 0.5\n")
    assert not result.diagnostics
    (clock,) = result.config.local_clocks
    assert (clock.stratum, clock.refid, clock.time1, clock.prefer) == (10, "GPS", 0.5, True)


def test_fudge_before_its_server_line_still_applies():
    result = parse("fudge 127.127.1.0 stratum 8\nserver 127.127.1.0\n")
    assert result.config.local_clocks[0].stratum == 8


def test_fudge_stratum_16_is_accepted_as_ntpd_accepts_it():
    result = parse("server 127.127.1.0\nfudge 127.127.1.0 stratum 16")
    assert not result.diagnostics, messages(result)
    assert result.config.local_clocks[0].stratum == 16


def test_fudge_stratum_above_16_is_ignored_as_ntpd_ignores_it():
    result = parse("server 127.127.1.0\nfudge 127.127.1.0 stratum 17 refid LCL")
    assert "fudge stratum 17 is out of range 0..16; ignored, as ntpd does" in only_warning(
        result)
    assert (result.config.local_clocks[0].stratum, result.config.local_clocks[0].refid) == (
        5, "LCL")


def test_fudge_refid_longer_than_4_is_cut_to_4_as_ntpd_does():
    result = parse("server 127.127.1.0\nfudge 127.127.1.0 refid TOOLONG")
    assert "using 'TOOL', as ntpd does" in only_warning(result)
    assert result.config.local_clocks[0].refid == "TOOL"


def test_fudge_refid_with_a_space_like_character_is_an_error():
    assert "must be 1 to 4 printable ASCII" in only_error(
        parse("server 127.127.1.0\nfudge 127.127.1.0 refid \"A B\""))


def test_fudge_without_matching_server_is_a_warning():
    assert "has no matching 'server 127.127.1.1' line" in only_warning(
        parse("fudge 127.127.1.1 stratum 10")
    )


@pytest.mark.parametrize("options", ["burst iburst prefer", "iburst", "prefer true",
                                     "minpoll 4 maxpoll 6 mode 0", "version 4"])
def test_options_on_a_local_clock_line_keep_the_local_clock(options):
    """`server 127.127.1.0 burst iburst prefer` (real files): ntpd takes every server option
    on a reference clock line, and so does pyntpd; those without meaning for the LOCAL
    driver are named in a warning."""
    result = parse(f"server 127.127.1.0 {options}\nfudge 127.127.1.0 stratum 10")
    assert not result.errors, messages(result)
    (clock,) = result.config.local_clocks
    assert clock.stratum == 10
    assert clock.prefer == ("prefer" in options)
    assert not any("no matching" in m for m in messages(result))


def test_burst_iburst_prefer_local_clock_warns_only_about_burst_and_iburst():
    result = parse("server 127.127.1.0 burst iburst prefer\nfudge 127.127.1.0 stratum 10")
    assert [d.message for d in result.warnings] == [
        "option 'burst' has no effect on the LOCAL driver; ignored",
        "option 'iburst' has no effect on the LOCAL driver; ignored",
    ]


def test_fudge_after_a_local_clock_line_in_error_says_that_line_is_not_used():
    result = parse("server 127.127.1.0 ttl 3\nfudge 127.127.1.0 stratum 10")
    assert "'ttl' does not apply to reference clocks" in only_error(result)
    assert "fudge for '127.127.1.0' ignored: its 'server 127.127.1.0' line (ntp.conf:1:8) is " \
        "not used" in messages(result)[1]


def test_fudge_of_a_network_address_is_an_error():
    assert "applies to reference clocks" in only_error(parse("fudge 192.0.2.1 stratum 3"))


def test_fudge_unknown_option_is_an_error_with_suggestion():
    msg = only_error(parse("server 127.127.1.0\nfudge 127.127.1.0 stratun 10"))
    assert "unknown fudge option 'stratun'; did you mean 'stratum'?" in msg


def test_fudge_time2_is_accepted_with_a_warning():
    result = parse("server 127.127.1.0\nfudge 127.127.1.0 time2 0.1")
    assert "fudge 'time2' has no effect on the LOCAL driver" in only_warning(result)


def test_refclock_types_pyntpd_does_not_build_are_ignored_with_a_warning():
    result = parse("server 127.127.11.0 prefer\nfudge 127.127.11.0 refid GPS\n")
    assert "refclock type 11 is not supported; line ignored" in only_warning(result)
    assert result.config.local_clocks == () and result.config.servers == ()
    assert result.config.refclocks == ()


def test_refclock_with_pool_is_an_error():
    assert "configured with 'server', not 'pool'" in only_error(parse("pool 127.127.1.0"))


def test_duplicate_local_clock_is_a_warning():
    result = parse("server 127.127.1.0\nserver 127.127.1.0\n")
    assert "duplicate server '127.127.1.0'" in only_warning(result)
    assert len(result.config.local_clocks) == 1
