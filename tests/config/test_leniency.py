"""ntpd's leniency, each case found in real files: a line ntpd 4.2.8 accepts is accepted, a
value it clamps is clamped with a warning, and one bad word never costs a line's other
settings."""

from __future__ import annotations

from pyntpd.config.audit import audit

from .helpers import FakeResolver, messages, only_error, only_warning, parse


def test_tinker_line_with_allan_in_seconds_keeps_panic_0_and_stepout_900():
    """The whole line used to be dropped for `allan 1500`: panic 0 and stepout 900 lost."""
    result = parse("tinker panic 0 allan 1500 dispersion 15 step 0.128 stepout 900")
    assert not result.errors, messages(result)
    tinker = result.config.tinker
    assert (tinker.panic, tinker.stepout, tinker.step, tinker.dispersion) == (
        0.0, 900.0, 0.128, 15.0)
    assert tinker.allan == 1500 % 256  # ntpd 4.2.8 keeps allan in a byte


def test_allan_that_does_not_fit_a_byte_says_what_ntpd_keeps():
    result = parse("tinker allan 1500")
    assert any("allan 1500 does not fit ntpd 4.2.8's byte (log2 s); ntpd keeps 220" in m
               for m in messages(result))


def test_panic_0_warning_is_given_only_when_panic_0_is_applied():
    applied = parse("tinker panic 0 allan 1500")
    assert applied.config.tinker.panic == 0.0
    assert sum("disables the 1000 s sanity limit" in m for m in messages(applied)) == 1
    not_applied = parse("tinker panic zero")
    assert not_applied.config.tinker.panic == 1000.0
    assert not any("sanity limit" in m for m in messages(not_applied))


def test_audit_of_the_tinker_line_reports_the_applied_panic_0_once():
    result = parse("tinker panic 0 allan 1500 dispersion 15 step 0.128 stepout 900")
    codes = [f.code for f in audit(result, resolve=FakeResolver())]
    assert codes.count("tinker-panic-0") == 1
    assert "parse" in codes  # the allan and dispersion warnings
    assert not any(f.severity == "error" for f in audit(result, resolve=FakeResolver()))


def test_tick_directive_is_accepted_and_ignored():
    result = parse("tick 10000\nserver a.example")
    assert "'tick' ignored: pyntpd uses the kernel's tick" in only_warning(result)
    assert len(result.config.servers) == 1


def test_tinker_tick_is_accepted_and_ignored():
    result = parse("tinker tick 0.01 panic 0")
    assert not result.errors
    assert result.config.tinker.panic == 0.0


def test_unconfig_removes_the_association_as_ntpd_does():
    result = parse("server a.example\nserver b.example\nunconfig a.example")
    assert [s.address for s in result.config.servers] == ["b.example"]
    assert "removes the server 'a.example' of ntp.conf:1:8, as ntpd does" in only_warning(result)


def test_unpeer_applies_whatever_its_position_as_in_ntpd():
    """ntpd applies unpeer lines after every association of the file exists."""
    result = parse("unpeer 192.0.2.1\nserver 192.0.2.1\nserver 192.0.2.2")
    assert [s.address for s in result.config.servers] == ["192.0.2.2"]


def test_unpeer_of_an_association_id_is_ignored_with_a_warning():
    result = parse("server a.example\nunpeer 12345")
    assert "names an association id, which only exists at run time" in only_warning(result)
    assert len(result.config.servers) == 1


def test_unpeer_of_nothing_configured_is_a_warning():
    assert "nothing to remove" in only_warning(parse("unpeer c.example"))


def test_end_stops_reading_as_ntpd_does():
    result = parse("server a.example\nend\nserver b.example\nrestrict default ignore")
    assert [s.address for s in result.config.servers] == ["a.example"]
    assert result.config.restrictions == ()
    assert "not read: ntpd stops reading its configuration at 'end' (ntp.conf:2:1)" in (
        only_warning(result))


def test_end_in_an_include_file_stops_the_including_file_too():
    result = parse("includefile /etc/ntp/extra.conf\nserver b.example",
                   files={"/etc/ntp/extra.conf": "server a.example\nend\n"})
    assert [s.address for s in result.config.servers] == ["a.example"]


def test_end_as_the_last_line_says_nothing():
    assert not parse("server a.example\nend\n").diagnostics


def test_non_contiguous_mask_is_accepted():
    result = parse("restrict 10.0.0.0 mask 255.0.255.0 noquery")
    assert not result.errors and len(result.config.restrictions) == 1


def test_one_bad_enable_flag_keeps_the_others():
    result = parse("disable monitor kernl")
    assert "unknown flag 'kernl'" in only_error(result)
    assert result.config.flags.monitor is False


def test_one_bad_statistics_name_keeps_the_others():
    result = parse("statistics loopstats peerstatz sysstats")
    assert "unknown statistics name 'peerstatz'" in only_error(result)
    assert result.config.statistics == ("loopstats", "sysstats")
