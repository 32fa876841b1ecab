import pytest

from pyntpd.cli.options import OptionError, parse_args


def test_seed_init_script_options_parse_with_ntpd_meanings():
    o = parse_args(["-g", "-u", "ntp:ntp", "-p", "/var/run/ntpd.pid"])
    assert (o.panic_gate, o.user, o.group, o.pidfile) == (True, "ntp", "ntp", "/var/run/ntpd.pid")
    assert o.foreground is False


def test_user_without_group():
    o = parse_args(["-u", "ntp"])
    assert (o.user, o.group) == ("ntp", None)


def test_debug_implies_foreground_as_in_ntpd():
    assert parse_args(["-d"]).foreground is True


def test_debug_is_repeatable():
    assert parse_args(["-d", "-d", "-d"]).debug_level == 3


def test_set_debug_level_overrides_count():
    assert parse_args(["-d", "-D", "5"]).debug_level == 5


def test_trusted_keys_accumulate():
    assert parse_args(["-t", "4", "-t", "8"]).trusted_keys == (4, 8)


@pytest.mark.parametrize("argv", [["-t", "0"], ["-t", "x"], ["--port", "0"], ["--port", "70000"],
                                  ["--workers", "0"], ["-4", "-6"], ["-u", ":grp"]])
def test_bad_values_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2


def test_saveconfigquit_is_refused_saying_why():
    with pytest.raises(OptionError, match="CVE-2015-7851"):
        parse_args(["--saveconfigquit", "/tmp/x"])


def test_ntpd_only_options_are_accepted_with_a_warning():
    o = parse_args(["-A", "-M", "-U", "300", "--var", "a=b"])
    assert len(o.warnings) == 4


def test_b_m_and_r_are_the_broadcast_client_directives():
    o = parse_args(["-b", "-m", "224.0.1.1", "-m", "ff05::101", "-r", "0.004"])
    assert o.broadcast_client and o.multicast_groups == ("224.0.1.1", "ff05::101")
    assert o.broadcast_delay == 0.004 and not o.warnings


def test_m_needs_a_multicast_group():
    with pytest.raises(OptionError, match=r"-m 10\.0\.0\.1: not a multicast group"):
        parse_args(["-m", "10.0.0.1"])


def test_r_needs_seconds():
    with pytest.raises(OptionError, match="-r fast: not a number of seconds"):
        parse_args(["-r", "fast"])


def test_all_ntpd_flags_with_values():
    o = parse_args(["-c", "/etc/ntp.conf", "-f", "/d", "-k", "/k", "-l", "/l", "-s", "/s",
                    "-i", "/jail", "-I", "127.0.0.1", "-q", "-x", "-G", "-N", "-P", "5",
                    "-w", "10", "-L", "-a", "-n", "-4"])
    assert (o.config_file, o.driftfile, o.keyfile, o.logfile, o.statsdir, o.jaildir) == \
        ("/etc/ntp.conf", "/d", "/k", "/l", "/s", "/jail")
    assert o.interfaces == ("127.0.0.1",) and o.quit_after_set and o.slew_only
    assert o.force_step_once and o.nice and o.priority == 5 and o.wait_sync == 10.0
    assert o.foreground and o.ipv4_only


def test_configfile_and_builtin_config_contradict():
    with pytest.raises(OptionError):
        parse_args(["-c", "x", "--builtin-config"])
