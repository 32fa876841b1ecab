"""Leap seconds end to end (issue 10 §4): the real engine, associations and responders in
the simulator, whose servers keep UTC through the leap and whose client clock is a model of
the Linux kernel's leap handling. Offsets are measured against UTC."""

import dataclasses

import pytest

from pyntpd.sim.scenarios import (
    HOUR,
    JAN_2017,
    JUL_2027,
    LEAPFILE_EXPIRED_2016,
    SCENARIOS,
    run,
)

MINUTE = 60.0


def leap_run(name, **kw):
    setup = SCENARIOS[name]
    if kw:
        setup = dataclasses.replace(setup, **kw)
    report, sim = run(setup, 1, keep_updates=True)
    return report, sim


def true_time(sim, utc):
    """The true time at which UTC reads `utc` (before any leap of the run)."""
    return utc - sim.utc.epoch


def served_li(sim, t):
    """The LI pyntpd served at true time t: its last update's system variables."""
    leap = None
    for when, result in sim.trace.updates:
        if when > t:
            break
        leap = result.system.leap
    return leap


def leap_at(sim, t):
    """The leap pyntpd knew of at true time t (the midnight ending its day), if any."""
    at = None
    for when, result in sim.trace.updates:
        if when > t:
            break
        at = result.leap.at
    return at


def offset_at(sim, t):
    """Local clock minus UTC at true second t."""
    return sim.trace.offsets[int(t) - 1]


def events(sim):
    """What the client's kernel did, at which true time."""
    return sim.clock.leap_events


def test_an_insertion_is_armed_on_31_december_and_made_at_midnight():
    report, sim = leap_run("leap-insert")
    leap = true_time(sim, JAN_2017)
    (armed_at, armed), (inserted_at, inserted) = events(sim)
    assert (armed, inserted) == ("armed INS", "inserted")
    assert leap - 86400 - 1e-3 <= armed_at < leap - 86400 + MINUTE  # 31 Dec, 00:00
    assert inserted_at == pytest.approx(leap, abs=1e-3)
    assert served_li(sim, leap - 30 * HOUR) == 0  # 30 Dec: announced upstream, not by us
    assert served_li(sim, leap - 23 * HOUR) == 1  # 31 Dec
    assert served_li(sim, leap - MINUTE) == 1 and served_li(sim, leap + MINUTE) == 0
    assert abs(offset_at(sim, leap + MINUTE)) < 1e-3
    assert report.steps == () and report.max_abs < 1e-3


def test_an_announcement_from_the_start_of_december_is_neither_served_nor_inserted_early():
    # The failure issue 10 measured: LI=1 from 1 December armed the kernel at once, and Linux
    # inserted a second at the end of 5 December, and again of 6 December. Nor is it passed
    # on before the 31st, where a client doing the same would insert it.
    report, sim = leap_run("leap-announced-early")
    assert sim.clock.leap_events == []
    for midnight in (JAN_2017 - 26 * 86400, JAN_2017 - 25 * 86400):  # 6 and 7 December
        t = true_time(sim, midnight)
        assert served_li(sim, t - MINUTE) == 0
        assert abs(offset_at(sim, t + MINUTE)) < 1e-3
    assert sim.trace.updates[-1][1].leap.at == JAN_2017  # remembered for the 31st
    assert report.steps == ()
    assert sum(abs(x) >= 0.5 for x in sim.trace.offsets) == 0


def test_an_announcement_weeks_early_is_ignored_in_november_and_remembered_in_december():
    report, sim = leap_run("leap-weeks-early")
    dec_1 = true_time(sim, JAN_2017 - 31 * 86400)
    assert sim.clock.leap_events == []
    assert served_li(sim, dec_1 - MINUTE) == 0  # LI=1 in November would mean 30 November
    assert leap_at(sim, dec_1 - MINUTE) is None
    assert served_li(sim, dec_1 + 2 * HOUR) == 0  # not said before 31 December ...
    assert leap_at(sim, dec_1 + 2 * HOUR) == JAN_2017  # ... but December's word is taken
    assert report.steps == () and report.max_abs < 1e-3


def test_a_leapfile_deletion_serves_li_2_and_arms_sta_del_on_30_june_only_never_stepping():
    # The servers delete the second but do not announce it: the leapfile alone says so.
    report, sim = leap_run("leap-delete")
    leap = true_time(sim, JUL_2027)
    (armed_at, armed), (deleted_at, deleted) = events(sim)
    assert (armed, deleted) == ("armed DEL", "deleted")
    assert leap - 86400 - 1e-3 <= armed_at < leap - 86400 + MINUTE  # 30 June, 00:00
    assert deleted_at == pytest.approx(leap - 1, abs=1e-3)  # 23:59:59 became 00:00:00
    assert served_li(sim, leap - 30 * HOUR) == 0  # 29 June: known, neither served nor armed
    assert leap_at(sim, leap - 30 * HOUR) == JUL_2027
    assert served_li(sim, leap - MINUTE) == 2 and served_li(sim, leap + MINUTE) == 0
    assert abs(offset_at(sim, leap + MINUTE)) < 1e-3
    assert report.steps == () and report.max_abs < 1e-3
    assert sim.clock.tai == 36  # 37 from the list, one less after the deletion


def test_an_expired_leapfile_does_not_silence_a_voting_majority():
    report, sim = leap_run("leap-insert", leap_list=LEAPFILE_EXPIRED_2016)
    assert [what for _, what in events(sim)] == ["armed INS", "inserted"]
    assert sim.trace.updates[-1][1].leap.expired
    assert sim.clock.tai == 37  # 36 from the expired list, and the kernel's insertion
    assert report.steps == () and report.max_abs < 1e-3


def test_samples_straddling_the_leap_are_ignored():
    start = JAN_2017 - 2 * HOUR
    report, sim = run(dataclasses.replace(SCENARIOS["leap-insert"], epoch=start,
                                          duration=3 * HOUR), 1, minpoll=4, maxpoll=4)
    assert sim.engine.leap.ignored > 0
    assert [what for _, what in sim.clock.leap_events] == ["armed INS", "inserted"]
    assert report.steps == () and report.max_abs < 1e-4
