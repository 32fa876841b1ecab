from __future__ import annotations

import ipaddress

import pytest

from pyntpd.config import parse_text
from pyntpd.proto.access_types import RestrictFlag, RestrictRule

from .helpers import FakeResolver, messages, only_error, only_warning, parse

F = RestrictFlag
V4_ALL = ipaddress.ip_network("0.0.0.0/0")
V6_ALL = ipaddress.ip_network("::/0")


def _rules(text: str, **kw) -> tuple[RestrictRule, ...]:
    result = parse(text, **kw)
    assert not result.diagnostics, messages(result)
    return result.config.restrictions


def test_default_without_family_applies_to_ipv4_and_ipv6():
    assert _rules("restrict default kod limited nomodify") == (
        RestrictRule(V4_ALL, F.KOD | F.LIMITED | F.NOMODIFY, is_default=True),
        RestrictRule(V6_ALL, F.KOD | F.LIMITED | F.NOMODIFY, is_default=True),
    )


def test_default_with_dash_4_applies_to_ipv4_only():
    assert _rules("restrict -4 default ignore") == (RestrictRule(V4_ALL, F.IGNORE, True),)


def test_default_with_dash_6_applies_to_ipv6_only():
    assert _rules("restrict -6 default noquery") == (RestrictRule(V6_ALL, F.NOQUERY, True),)


def test_repeated_entry_adds_flags_as_ntpd_does():
    rules = _rules("restrict default nomodify\nrestrict -6 default noquery")
    assert rules[1] == RestrictRule(V6_ALL, F.NOMODIFY | F.NOQUERY, True)
    assert len(rules) == 2


def test_ntpport_entry_is_separate_from_the_plain_one():
    rules = _rules("restrict 192.0.2.1 noquery\nrestrict 192.0.2.1 ntpport ignore")
    assert len(rules) == 2


def test_address_without_mask_is_a_host():
    assert _rules("restrict 127.0.0.1") == (
        RestrictRule(ipaddress.ip_network("127.0.0.1/32"), F.NONE),
    )


def test_ipv6_address_without_mask_is_a_host():
    assert _rules("restrict -6 ::1")[0].network == ipaddress.ip_network("::1/128")


def test_mask_gives_the_prefix():
    (rule,) = _rules("restrict 172.16.0.0 mask 255.255.0.0 nomodify notrap")
    assert rule == RestrictRule(ipaddress.ip_network("172.16.0.0/16"), F.NOMODIFY | F.NOTRAP)


def test_ipv6_mask_gives_the_prefix():
    (rule,) = _rules("restrict 2001:db8:: mask ffff:ffff:: noquery")
    assert rule.network == ipaddress.ip_network("2001:db8::/32")


def test_non_contiguous_mask_is_kept_as_ntpd_keeps_it_with_a_warning():
    result = parse("restrict 10.1.2.3 mask 255.0.255.0 noquery")
    assert "mask '255.0.255.0' is not contiguous" in only_warning(result)
    assert result.config.restrictions == (
        RestrictRule(ipaddress.ip_network("10.0.2.0/32"), F.NOQUERY, mask=0xFF00FF00),
    )


def test_mask_that_is_not_an_address_is_an_error():
    msg = only_error(parse("restrict 10.0.0.0 mask 255.255.0"))
    assert "'255.255.0' is not a valid mask" in msg


def test_mask_of_the_other_family_is_an_error():
    assert "mask 'ffff::' is IPv6" in only_error(parse("restrict 10.0.0.0 mask ffff::"))


def test_missing_mask_value_is_an_error():
    assert "missing mask after 'mask'" in only_error(parse("restrict 10.0.0.0 mask"))


def test_bad_address_is_an_error():
    assert "'10.0.0.256' is not a valid IPv4 address" in only_error(parse("restrict 10.0.0.256"))


def test_host_bits_outside_the_mask_are_a_warning():
    result = parse("restrict 10.1.2.3 mask 255.0.0.0")
    assert "the rule covers 10.0.0.0/8" in only_warning(result)
    assert result.config.restrictions[0].network == ipaddress.ip_network("10.0.0.0/8")


def test_cidr_notation_is_accepted():
    (rule,) = _rules("restrict 192.168.0.0/16 noquery")
    assert rule.network == ipaddress.ip_network("192.168.0.0/16")


def test_cidr_and_mask_together_are_an_error():
    assert "either ADDRESS/PREFIX or 'mask'" in only_error(
        parse("restrict 10.0.0.0/8 mask 255.0.0.0")
    )


def test_source_is_a_template_without_network():
    assert _rules("restrict source nomodify notrap noquery") == (
        RestrictRule(None, F.NOMODIFY | F.NOTRAP | F.NOQUERY | F.SOURCE),
    )


def test_later_restrict_source_replaces_the_earlier_one():
    rules = _rules("restrict source noquery\nrestrict source nomodify")
    assert rules == (RestrictRule(None, F.NOMODIFY | F.SOURCE),)


def test_mask_with_default_is_an_error():
    assert "'mask' cannot be used" in only_error(parse("restrict default mask 255.0.0.0"))


def test_host_name_is_resolved_to_one_host_rule_per_address():
    rules = _rules(
        "restrict time.example nomodify",
        hosts={"time.example": ["192.0.2.5", "2001:db8::5"]},
    )
    assert rules == (
        RestrictRule(ipaddress.ip_network("192.0.2.5/32"), F.NOMODIFY, hostname="time.example"),
        RestrictRule(ipaddress.ip_network("2001:db8::5/128"), F.NOMODIFY, hostname="time.example"),
    )


def test_host_name_resolution_honours_dash_4():
    resolver = FakeResolver({"time.example": ["192.0.2.5", "2001:db8::5"]})
    result = parse_text("restrict -4 time.example", resolve=resolver)
    assert [str(r.network) for r in result.config.restrictions] == ["192.0.2.5/32"]
    assert resolver.calls == [("time.example", 2)]


def test_unresolvable_host_name_restricting_nothing_beyond_the_default_is_skipped():
    result = parse("restrict default kod limited nomodify notrap nopeer noquery\n"
                   "restrict nowhere.example nomodify notrap noquery")
    assert "'nowhere.example' does not resolve now; this restrict rule is skipped" in (
        only_warning(result)
    )
    assert not result.fatal
    assert len(result.config.restrictions) == 2


def test_unresolvable_host_name_that_restricts_more_than_the_default_stops_the_start():
    result = parse("restrict default nomodify\nrestrict nowhere.example ignore")
    (error,) = result.errors
    assert error.fatal
    assert "'nowhere.example' does not resolve now, so its restrict rule (ignore) cannot be " \
        "applied" in error.message


def test_unresolvable_host_name_without_a_default_stops_the_start():
    assert parse("restrict nowhere.example noquery").fatal


def test_unknown_flag_is_a_fatal_error_with_suggestion():
    result = parse("restrict default nomodfy")
    assert only_error(result) == (
        "ntp.conf:1:18: error: unknown restrict flag 'nomodfy'; did you mean 'nomodify'?; "
        "pyntpd refuses to start with a restrict line it cannot honour, rather than run more "
        "open than this file says"
    )
    assert result.fatal == result.errors


@pytest.mark.parametrize("line", [
    "restrict 10.0.0.256 noquery",
    "restrict 10.0.0.0 mask 255.255.0 noquery",
    "restrict -6 10.0.0.1 ignore",
    "restrict 10.0.0.0 mask ffff:: noquery",
    "restrict source mask 255.0.0.0",
    "restrict default kod limited noqeury",
])
def test_restrict_line_that_cannot_be_honoured_is_fatal(line):
    result = parse(line)
    assert result.errors and all(d.fatal for d in result.errors)
    assert result.config.restrictions == ()


def test_bad_restrict_line_does_not_make_other_lines_fatal():
    result = parse("restrict default noquery\nserver a.example perfer")
    assert result.errors and not result.fatal


@pytest.mark.parametrize("flag", ["lowpriotrap", "notrap", "nomodify", "notrust", "version",
                                  "nomrulist", "noserve", "ignore", "ntpport"])
def test_every_ntpd_flag_is_accepted(flag):
    assert _rules(f"restrict -4 default {flag}")[0].flags != F.NONE


def test_noepeer_is_accepted_with_a_warning():
    assert "restrict flag 'noepeer' ignored" in only_warning(parse("restrict default noepeer"))


def test_ippeerlimit_consumes_its_value():
    result = parse("restrict default ippeerlimit 2 noquery")
    assert "'ippeerlimit' ignored" in only_warning(result)
    assert result.config.restrictions[0].flags == F.NOQUERY


def test_samba_restrict_line_with_mssntp_keeps_every_flag():
    rules = _rules("restrict -4 default kod limited nomodify notrap nopeer noquery mssntp")
    assert rules == (RestrictRule(
        V4_ALL, F.KOD | F.LIMITED | F.NOMODIFY | F.NOTRAP | F.NOPEER | F.NOQUERY | F.MSSNTP,
        True),)


def test_ntpsigndsocket_names_the_signd_directory():
    config = parse("ntpsigndsocket /var/lib/samba/ntp_signd/\nrestrict default mssntp").config
    assert config.signd_directory == "/var/lib/samba/ntp_signd/"


def test_mssntp_without_ntpsigndsocket_uses_ntpds_default_directory():
    assert parse("restrict default mssntp").config.signd_directory == "/var/run/ntp_signd"


def test_ntpsigndsocket_without_an_mssntp_rule_signs_nothing():
    assert parse("ntpsigndsocket /run/signd\nrestrict default kod").config.signd_directory is None


def test_bracketed_ipv6_address_is_accepted_as_ntpd_does():
    assert _rules("restrict [::1]") == _rules("restrict ::1")


def test_bracketed_ipv6_address_with_mask():
    (rule,) = _rules("restrict [2001:db8::] mask [ffff:ffff::] noquery")
    assert rule.network == ipaddress.ip_network("2001:db8::/32")


def test_host_name_with_an_all_ones_mask_does_not_warn_that_the_mask_is_ignored():
    result = parse("restrict time.example mask 255.255.255.255 nomodify",
                   hosts={"time.example": ["192.0.2.5"]})
    assert not result.diagnostics, messages(result)


def test_host_name_with_a_network_mask_warns_that_the_mask_is_ignored():
    result = parse("restrict time.example mask 255.255.255.0 nomodify",
                   hosts={"time.example": ["192.0.2.5"]})
    assert "'mask' is ignored for a host name" in only_warning(result)


def test_missing_address_is_an_error():
    assert "missing address, 'default' or 'source' after 'restrict'" in only_error(
        parse("restrict")
    )


def test_delrestrict_removes_the_entry_an_earlier_line_made():
    rules = _rules("restrict default noquery\nrestrict 10.0.0.0 mask 255.0.0.0 nomodify\n"
                   "restrict 192.0.2.1 ignore\ndelrestrict 10.0.0.0 mask 255.0.0.0")
    assert [r.describe() for r in rules] == ["default", "-6 default", "192.0.2.1"]


def test_delrestrict_of_nothing_is_a_warning():
    assert "nothing to remove" in only_warning(parse("delrestrict 10.0.0.1"))


def test_delrestrict_that_cannot_be_read_is_fatal_like_restrict():
    assert parse("delrestrict 10.0.0.300").fatal


@pytest.mark.parametrize("line", ["interface listen eth0!!", "interface ignor all",
                                  "nic drop 10.0.0.300", "listen 10.0.0.300",
                                  "interface listen"])
def test_interface_line_that_cannot_be_honoured_is_fatal(line):
    result = parse(line)
    assert result.errors and all(d.fatal for d in result.errors)
    assert result.config.interfaces == ()


def test_bracketed_interface_address_is_accepted():
    (rule,) = parse("interface listen [::1]").config.interfaces
    assert rule.network == ipaddress.ip_network("::1/128")
