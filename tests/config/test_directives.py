from __future__ import annotations

import ipaddress

import pytest

from pyntpd.config import (
    DiscardConfig,
    FilegenConfig,
    InterfaceRule,
    MruConfig,
    NtpConfig,
    SystemFlags,
    TinkerConfig,
    TosConfig,
)

from .helpers import messages, only_error, only_warning, parse


def _config(text: str, **kw) -> NtpConfig:
    result = parse(text, **kw)
    assert not result.diagnostics, messages(result)
    return result.config


def test_unknown_directive_suggests_the_closest():
    assert only_error(parse("sever a.example")) == (
        "ntp.conf:1:1: error: unknown directive 'sever'; did you mean 'server'?"
    )


def test_unknown_directive_far_from_everything_has_no_hint():
    assert only_error(parse("qqqqqqqq")) == "ntp.conf:1:1: error: unknown directive 'qqqqqqqq'"


def test_errors_do_not_stop_the_rest_of_the_file():
    result = parse("sever a\nserver b.example\n")
    assert [s.address for s in result.config.servers] == ["b.example"]


# -- files ----------------------------------------------------------------------------------


def test_driftfile_is_recorded():
    assert _config("driftfile /var/lib/ntp/drift").driftfile == "/var/lib/ntp/drift"


def test_driftfile_quoted_path_may_contain_spaces():
    assert _config('driftfile "/var/lib/my ntp/drift"').driftfile == "/var/lib/my ntp/drift"


def test_driftfile_without_path_is_an_error():
    assert "missing file name after 'driftfile'" in only_error(parse("driftfile"))


def test_driftfile_wander_threshold_is_ignored_with_a_warning():
    result = parse("driftfile /var/lib/ntp/drift 1e-7")
    assert "wander threshold is not supported" in only_warning(result)
    assert result.config.driftfile == "/var/lib/ntp/drift"


def test_relative_path_is_taken_from_the_config_directory_with_a_warning():
    result = parse("driftfile drift", "/etc/ntp/ntp.conf")
    assert result.config.driftfile == "/etc/ntp/drift"
    assert "relative file name 'drift' is taken as '/etc/ntp/drift'" in only_warning(result)


def test_extra_argument_is_an_error():
    assert "unexpected argument 'x' for 'logfile'" in only_error(parse("logfile /var/log/ntp x"))


def test_logfile_is_recorded():
    assert _config("logfile /var/log/ntp.log").logfile == "/var/log/ntp.log"


def test_pidfile_is_recorded():
    assert _config("pidfile /run/ntpd.pid").pidfile == "/run/ntpd.pid"


def test_statsdir_is_recorded():
    assert _config("statsdir /var/log/ntpstats/").statsdir == "/var/log/ntpstats/"


def test_leapfile_is_recorded_with_hash_checking_by_default():
    config = _config("leapfile /usr/share/zoneinfo/leap-seconds.list")
    assert (config.leapfile, config.leapfile_checkhash) == (
        "/usr/share/zoneinfo/leap-seconds.list",
        True,
    )


def test_leapfile_ignorehash_is_recorded():
    assert _config("leapfile /etc/leap ignorehash").leapfile_checkhash is False


# -- keys directives ----------------------------------------------------------------------

KEYS = {"/etc/ntp/keys": "".join(f"{i} MD5 pass{i}\n" for i in range(1, 11))}


def test_trustedkey_list_is_recorded():
    config = _config("keys /etc/ntp/keys\ntrustedkey 4 8 2", files=KEYS)
    assert config.trusted_keys == frozenset({2, 4, 8})


def test_trustedkey_range_uses_ntpd_syntax():
    config = _config("keys /etc/ntp/keys\ntrustedkey 1 (3 ... 5) 9", files=KEYS)
    assert config.trusted_keys == frozenset({1, 3, 4, 5, 9})


def test_trustedkey_range_without_spaces_is_accepted():
    config = _config("keys /etc/ntp/keys\ntrustedkey (1...3)", files=KEYS)
    assert config.trusted_keys == frozenset({1, 2, 3})


def test_trustedkey_dash_range_is_an_error_with_ntpd_syntax_hint():
    msg = only_error(parse("keys /etc/ntp/keys\ntrustedkey 1-5", files=KEYS))
    assert "'1-5' is not ntpd syntax; write ranges as '(1 ... 5)'" in msg


def test_trustedkey_empty_range_is_an_error():
    assert "is empty" in only_error(parse("keys /etc/ntp/keys\ntrustedkey (5 ... 1)", files=KEYS))


def test_trustedkey_malformed_range_is_an_error():
    result = parse("keys /etc/ntp/keys\ntrustedkey (1 5)", files=KEYS)
    assert "(FIRST ... LAST)" in only_error(result)


def test_trustedkey_out_of_range_id_is_an_error():
    assert "key id 0 is out of range" in only_error(parse("trustedkey 0"))


def test_controlkey_is_recorded():
    assert _config("keys /etc/ntp/keys\ncontrolkey 8", files=KEYS).control_key == 8


def test_requestkey_is_recorded_with_a_no_effect_warning():
    result = parse("keys /etc/ntp/keys\nrequestkey 8", files=KEYS)
    assert "'requestkey' has no effect" in only_warning(result)
    assert result.config.request_key == 8


# -- statistics ---------------------------------------------------------------------------


def test_statistics_names_are_recorded_in_order():
    config = _config("statistics loopstats peerstats clockstats")
    assert config.statistics == ("loopstats", "peerstats", "clockstats")
    assert config.stats_enabled("peerstats") and not config.stats_enabled("sysstats")


def test_unknown_statistics_name_suggests():
    assert "unknown statistics name 'loopstat'; did you mean 'loopstats'?" in only_error(
        parse("statistics loopstat")
    )


def test_filegen_is_recorded():
    config = _config("filegen loopstats file loops type week nolink enable")
    assert config.filegens == (FilegenConfig("loopstats", "loops", "week", False, True),)
    assert config.stats_enabled("loopstats")


def test_filegen_disable_overrides_statistics():
    config = _config("statistics peerstats\nfilegen peerstats disable")
    assert not config.stats_enabled("peerstats")


def test_disable_stats_turns_all_statistics_off():
    assert not _config("statistics loopstats\ndisable stats").stats_enabled("loopstats")


def test_filegen_file_with_a_path_is_an_error():
    assert "must be a plain file name" in only_error(parse("filegen loopstats file ../../etc/x"))


def test_filegen_unknown_type_is_an_error():
    assert "unknown filegen type 'weekly'; did you mean 'week'?" in only_error(
        parse("filegen loopstats type weekly")
    )


# -- tos, tinker, discard, mru ------------------------------------------------------------


def test_defaults_are_ntpd_values():
    config = NtpConfig()
    assert config.tos == TosConfig(minsane=1, minclock=3, maxclock=10, maxdist=1.5)
    tinker = config.tinker
    assert (tinker.step, tinker.stepout, tinker.panic) == (0.128, 300.0, 1000.0)
    assert config.discard == DiscardConfig(average=3, minimum=2, monitor=3000)
    assert config.mru == MruConfig(maxmem=1024, mindepth=600, maxage=64)


def test_tos_options_are_recorded():
    config = _config("tos minsane 3 minclock 4 maxclock 12 maxdist 2.5 orphan 10 cohort 1")
    assert config.tos == TosConfig(minsane=3, minclock=4, maxclock=12, maxdist=2.5, orphan=10,
                                   cohort=True)


def test_tos_minclock_above_maxclock_is_kept_with_a_warning_as_ntpd_does():
    result = parse("tos minclock 12")
    assert "minclock 12 is greater than maxclock 10" in only_warning(result)
    assert result.config.tos.minclock == 12


def test_tos_floor_above_ceiling_is_kept_with_a_warning_as_ntpd_does():
    result = parse("tos floor 10 ceiling 5")
    assert "floor 10 is greater than ceiling 5" in only_warning(result)
    assert (result.config.tos.floor, result.config.tos.ceiling) == (10, 5)


def test_tos_ceiling_above_15_is_clamped_as_ntpd_does():
    result = parse("tos ceiling 16")
    assert "ceiling 16 is above 15; using 15, as ntpd does" in only_warning(result)
    assert result.config.tos.ceiling == 15


def test_tos_unknown_option_suggests():
    assert "unknown option 'minsan' for 'tos'; did you mean 'minsane'?" in only_error(
        parse("tos minsan 2")
    )


def test_tos_unknown_option_drops_only_itself_and_its_value():
    result = parse("tos minsan 2 orphan 10")
    assert len(result.errors) == 1
    assert result.config.tos.orphan == 10


def test_tos_without_options_is_an_error():
    assert "missing option after 'tos'" in only_error(parse("tos"))


def test_tos_maxdist_zero_is_raised_to_the_smallest_usable_value():
    result = parse("tos maxdist 0")
    assert "maxdist 0 is below 0.001; using 0.001" in only_warning(result)
    assert result.config.tos.maxdist == 0.001


def test_tinker_options_are_recorded():
    result = parse("tinker step 0.5 stepout 600 panic 2000 allan 12 dispersion 20 freq -12.5")
    assert result.config.tinker == TinkerConfig(step=0.5, stepout=600.0, panic=2000.0,
                                                allan=12, dispersion=20.0, freq=-12.5)
    assert not result.errors


def test_tinker_knobs_pyntpd_has_no_use_for_say_so():
    result = parse("tinker allan 12 dispersion 20 huffpuff 7200")
    assert [str(d).split(": ", 2)[2] for d in result.warnings] == [
        "'tinker allan' has no effect: pyntpd's filter estimates the Allan intercept itself",
        "'tinker dispersion' has no effect: pyntpd uses RFC 5905's 15 PPM dispersion rate",
        "'tinker huffpuff' has no effect: pyntpd has no huff-n'-puff filter; its "
        "delay-bounded filter handles asymmetric congestion",
    ]


def test_tinker_panic_zero_warns_that_the_sanity_check_is_off():
    result = parse("tinker panic 0")
    assert "disables the 1000 s sanity limit" in only_warning(result)
    assert result.config.tinker.panic == 0.0


def test_tinker_huffpuff_below_900_is_raised_to_900_as_ntpd_does():
    result = parse("tinker huffpuff 60")
    assert "huffpuff 60 is below 900; using 900, as ntpd does" in messages(
        result)[0]
    assert result.config.tinker.huffpuff == 900.0


def test_tinker_negative_step_becomes_0():
    result = parse("tinker step -1")
    assert "step -1 is below 0; using 0" in only_warning(result)
    assert result.config.tinker.step == 0.0


def test_tinker_non_finite_value_is_an_error_that_drops_only_that_value():
    result = parse("tinker panic inf stepout 900")
    assert "panic must be a number, not 'inf'" in only_error(result)
    assert (result.config.tinker.panic, result.config.tinker.stepout) == (1000.0, 900.0)


def test_discard_options_are_recorded():
    assert _config("discard average 4 minimum 1 monitor 600").discard == DiscardConfig(4, 1, 600)


def test_discard_average_up_to_a_byte_is_accepted_as_ntpd_does():
    assert _config("discard average 20").discard.average == 20


def test_discard_average_beyond_a_byte_is_ignored_as_ntpd_does():
    result = parse("discard average 300 minimum 1")
    assert "average 300 is above 255; ignored, as ntpd does" in only_warning(result)
    assert result.config.discard == DiscardConfig(average=3, minimum=1)


def test_mru_options_are_recorded():
    config = _config("mru mindepth 100 maxage 30 initmem 8 incalloc 50")
    assert config.mru == MruConfig(mindepth=100, maxage=30, initmem=8, incalloc=50, incmem=None)


def test_mru_maxdepth_and_maxmem_last_one_wins():
    assert _config("mru maxmem 2048\nmru maxdepth 5000").mru.maxmem is None
    assert _config("mru maxdepth 5000 maxmem 2048").mru == MruConfig(maxdepth=None, maxmem=2048)


def test_mru_negative_limit_is_ignored_and_the_list_stays_bounded():
    """ntpd reads `maxdepth -1` as "no limit"; pyntpd keeps its bound."""
    result = parse("mru maxdepth -1")
    assert "maxdepth -1 is below 0; ignored" in only_warning(result)
    assert result.config.mru == MruConfig()


# -- enable/disable -----------------------------------------------------------------------


def test_enable_and_disable_set_flags():
    config = _config("disable monitor kernel\nenable calibrate")
    assert config.flags == SystemFlags(monitor=False, kernel=False, calibrate=True)


def test_unknown_enable_flag_suggests():
    assert "unknown flag 'kernal' for 'disable'; did you mean 'kernel'?" in only_error(
        parse("disable kernal")
    )


def test_disable_auth_warns_that_it_does_not_weaken_pyntpd():
    assert "'disable auth' does not weaken pyntpd" in only_warning(parse("disable auth"))


def test_disable_mode7_is_accepted():
    assert _config("disable mode7").flags.mode7 is False


# -- interface ----------------------------------------------------------------------------


def test_interface_rules_are_recorded_in_order():
    config = _config(
        "interface ignore wildcard\ninterface listen eth0\nnic listen 192.0.2.0/24\n"
        "interface drop ipv6"
    )
    assert config.interfaces == (
        InterfaceRule("ignore", "wildcard"),
        InterfaceRule("listen", "name", name="eth0"),
        InterfaceRule("listen", "address", network=ipaddress.ip_network("192.0.2.0/24")),
        InterfaceRule("drop", "ipv6"),
    )


def test_interface_unknown_action_suggests():
    assert "unknown interface action 'listn'; did you mean 'listen'?" in only_error(
        parse("interface listn eth0")
    )


def test_interface_bad_address_is_an_error():
    msg = only_error(parse("interface listen 300.1.1.1"))
    assert "'300.1.1.1' is not a valid address" in msg


def test_interface_name_too_long_is_an_error():
    assert "not a valid interface name" in only_error(parse("interface listen abcdefghijklmnopq"))


def test_listen_address_is_shorthand_for_interface_listen():
    config = _config("listen 127.0.0.1")
    assert config.interfaces == (
        InterfaceRule("listen", "address", network=ipaddress.ip_network("127.0.0.1/32")),
    )


def test_listen_with_a_name_is_an_error():
    assert "'eth0' is not an IP address" in only_error(parse("listen eth0"))


# -- accepted and ignored -----------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    ["logconfig =syncall +clockall", "setvar foo = bar", "trap 192.0.2.1", "saveconfigdir /tmp",
     "saveconfig /tmp/x", "rlimit memlock 32", "dscp 46"],
)
def test_ntpd_directive_without_pyntpd_meaning_is_a_warning(line):
    assert "ignored:" in only_warning(parse(line))


def test_trustedkey_range_members_missing_from_the_keys_file_are_not_each_reported():
    result = parse("keys /etc/ntp/keys\ntrustedkey (1 ... 65535)", files=KEYS)
    assert not result.diagnostics, messages(result)
    assert len(result.config.trusted_keys) == 65535
