"""`broadcast`, `broadcastclient`, `multicastclient`, `broadcastdelay`, `ttl` as ntpd 4.2.8
reads them; a broadcast client without a trusted key refused with the reason."""

from __future__ import annotations

import pytest

from pyntpd.config.broadcast import with_command_line
from pyntpd.config.model import DEFAULT_TTL_MAP, BroadcastClientConfig, BroadcastConfig

from .helpers import messages, only_error, only_warning, parse

KEYS = {"/etc/ntp/keys": "3 MD5 broadcastsecret\n7 SHA1 otherkey\n"}
TRUSTED = "keys /etc/ntp/keys\ntrustedkey 3\n"


def test_broadcast_line_becomes_a_broadcaster_every_64_s():
    result = parse("broadcast 192.168.1.255")
    assert not result.diagnostics
    assert result.config.broadcasts == (BroadcastConfig("192.168.1.255"),)
    assert result.config.broadcasts[0].minpoll == 6


def test_multicast_broadcast_keeps_key_ttl_and_version():
    result = parse(TRUSTED + "broadcast 224.0.1.1 ttl 4 key 3 version 3", files=KEYS)
    assert not result.diagnostics, messages(result)
    assert result.config.broadcasts == (
        BroadcastConfig("224.0.1.1", key=3, ttl=4, version=3),)


def test_ttl_on_a_broadcast_line_is_an_index_into_the_ttl_list_as_in_ntpd():
    error = only_error(parse("broadcast 224.0.1.1 ttl 8"))
    assert "ttl 8 is out of range 0..7" in error and "'ttl' list" in error


def test_default_ttl_list_is_ntpds():
    assert parse("").config.ttl_map == DEFAULT_TTL_MAP == (0, 32, 64, 96, 128, 160, 192, 224)


def test_ttl_directive_replaces_the_list_and_ignores_a_ninth_entry():
    result = parse("ttl 1 2 4 8 16 32 64 128 255")
    assert "more than 8 ttl values; '255' ignored" in only_warning(result)
    assert result.config.ttl_map == (1, 2, 4, 8, 16, 32, 64, 128)


def test_broadcast_minpoll_is_clamped_with_a_warning():
    result = parse("broadcast 10.0.0.255 minpoll 2")
    assert "minpoll 2 is out of range 3..17; 3 is used" in only_warning(result)
    assert result.config.broadcasts[0].minpoll == 3


@pytest.mark.parametrize("option", ["iburst", "burst", "prefer", "noselect", "maxpoll 10"])
def test_server_options_without_meaning_for_a_broadcaster_are_warned_about(option):
    result = parse(f"broadcast 10.0.0.255 {option}")
    assert "has no effect on a 'broadcast' line" in only_warning(result)
    assert len(result.config.broadcasts) == 1


def test_broadcast_needs_a_literal_address():
    assert "'ntp.example.org' is not an IP address" in only_error(
        parse("broadcast ntp.example.org"))


def test_broadcast_autokey_is_refused():
    assert "Autokey is broken by design" in only_error(parse("broadcast 10.0.0.255 autokey"))


def test_broadcast_key_missing_from_the_keys_file_is_an_error():
    error = only_error(parse(TRUSTED + "broadcast 10.0.0.255 key 9", files=KEYS))
    assert "key 9 is not in the keys file" in error


def test_broadcast_with_an_untrusted_key_is_warned_about():
    result = parse(TRUSTED + "broadcast 10.0.0.255 key 7", files=KEYS)
    assert "key 7 is not listed in 'trustedkey'" in only_warning(result)


def test_duplicate_broadcast_address_is_ignored_with_a_warning():
    result = parse("broadcast 10.0.0.255\nbroadcast 10.0.0.255 minpoll 4")
    assert "duplicate broadcast to '10.0.0.255'" in only_warning(result)
    assert result.config.broadcasts[0].minpoll == 6


def test_broadcastclient_with_a_trusted_key_listens():
    result = parse(TRUSTED + "broadcastclient", files=KEYS)
    assert not result.diagnostics, messages(result)
    assert result.config.broadcast_client == BroadcastClientConfig(enabled=True)
    assert result.config.flags.bclient


def test_enable_bclient_is_broadcastclient():
    result = parse(TRUSTED + "enable bclient", files=KEYS)
    assert not result.diagnostics, messages(result)
    assert result.config.broadcast_client.enabled


def test_broadcastclient_without_a_trusted_key_is_refused_with_the_reason_and_the_way_out():
    result = parse("broadcastclient")
    assert only_error(result) == (
        "ntp.conf:1:1: error: 'broadcastclient' without a trusted key is refused: pyntpd "
        "accepts only broadcasts signed with a trusted key (an unauthenticated broadcast client "
        "takes time from any host on the segment: CVE-2015-7973, CVE-2015-7979), and no key is "
        "trusted; add 'keys FILE' and 'trustedkey N' with the key of the broadcaster's "
        "'broadcast ADDRESS key N', or use 'server' lines")
    assert not result.config.broadcast_client.listening
    assert not result.config.flags.bclient


def test_a_key_listed_in_the_keys_file_but_not_trusted_does_not_make_a_client():
    result = parse("keys /etc/ntp/keys\nenable bclient", files=KEYS)
    assert "'broadcastclient' without a trusted key is refused" in only_error(result)


def test_multicastclient_joins_its_groups():
    result = parse(TRUSTED + "multicastclient 224.0.1.1 ff05::101", files=KEYS)
    assert not result.diagnostics, messages(result)
    assert result.config.broadcast_client.groups == ("224.0.1.1", "ff05::101")
    assert not result.config.broadcast_client.enabled


def test_multicastclient_without_a_group_joins_ntps_group():
    result = parse(TRUSTED + "multicastclient", files=KEYS)
    assert result.config.broadcast_client.groups == ("224.0.1.1",)


def test_multicastclient_drops_only_the_address_that_is_not_a_group():
    result = parse(TRUSTED + "multicastclient 10.1.1.1 224.0.1.1", files=KEYS)
    assert "'10.1.1.1' is not a multicast address" in only_error(result)
    assert result.config.broadcast_client.groups == ("224.0.1.1",)


def test_multicastclient_without_a_trusted_key_is_refused():
    result = parse("multicastclient 224.0.1.1")
    assert "'multicastclient' without a trusted key is refused" in only_error(result)
    assert result.config.broadcast_client.groups == ()


def test_broadcastdelay_sets_a_fixed_delay():
    assert parse("broadcastdelay 0.004").config.broadcast_client.delay == 0.004


def test_broadcastdelay_zero_means_ntpds_default_calibration():
    assert parse("broadcastdelay 0").config.broadcast_client.delay == -0.050


def test_novolley_is_not_ntpd_428_syntax():
    error = only_error(parse(TRUSTED + "broadcastclient novolley", files=KEYS))
    assert "'novolley' is not ntpd 4.2.8 syntax" in error and "broadcastdelay" in error


def test_b_flag_enables_the_client_over_a_file_with_a_trusted_key():
    result = with_command_line(parse(TRUSTED, files=KEYS), True, (), None)
    assert result.config.broadcast_client.enabled and not result.errors


def test_m_and_r_flags_add_a_group_and_set_the_delay():
    result = with_command_line(parse(TRUSTED + "multicastclient 224.0.1.1", files=KEYS),
                               False, ("ff05::101",), 0.004)
    client = result.config.broadcast_client
    assert client.groups == ("224.0.1.1", "ff05::101") and client.delay == 0.004


def test_b_flag_without_a_trusted_key_is_refused_with_the_reason():
    result = with_command_line(parse("restrict default"), True, (), None)
    assert only_error(result).startswith(
        "<command line>: error: -b without a trusted key is refused: pyntpd accepts only "
        "broadcasts signed with a trusted key")
    assert not result.config.broadcast_client.listening
