"""The engine's decisions, driven by explicit samples.

`World` plays the network and the clock: each source has a true offset against the raw
(never corrected) clock, and a sample reports it minus what the engine has done to the
clock so far — exactly what a real exchange would measure after the engine's corrections.
"""

import hashlib
import math
import random

import pytest

from pyntpd.config.model import TinkerConfig, TosConfig
from pyntpd.proto.source import SourceSpec
from pyntpd.proto.timestamp import unix_to_ntp
from pyntpd.sync.engine import PanicExit, SyncConfig, SyncEngine, refid_for
from pyntpd.sync.leap import LeapList
from pyntpd.sync.localclock import LocalClockDriver
from pyntpd.types import Sample, SetFrequency, SetStatus, SetTai, Slew, Step, Tally

T0 = 1_800_000_000.0
DELAY = 0.002
DAY = 86_400
DEC_5_2016 = 1_480_896_000.0
JAN_2017 = 1_483_228_800.0
JUL_2027 = 1_814_400_000.0
DELETE_2027 = LeapList(((int(JAN_2017), 37), (int(JUL_2027), 36)), expires=1_829_952_000)


class World:
    def __init__(self, config=None, start=T0, **sources):
        self.engine = SyncEngine(config or SyncConfig(), start)
        self.t = start
        self.result = self.engine.update(start)
        self.done = list(self.result.actions)  # every action so far
        for i, (name, spec) in enumerate(sources.items()):
            self.engine.add_source(name, spec or SourceSpec(f"192.0.2.{i + 1}"))

    def sample(self, key, raw_offset, *, stratum=1, leap=0, delay=DELAY, root_dispersion=1e-5):
        e = self.engine
        offset = raw_offset - e.model.correction(self.t)
        return e.on_sample(key, Sample(offset, delay, 1e-6, self.t, stratum, leap, -20, 0.0,
                                       root_dispersion, b"GPS\0", 0))

    def update(self, t):
        self.t = t
        self.result = self.engine.update(t)
        self.done += self.result.actions
        if self.result.stepped:
            self.t += self.result.step
        return self.result

    def run(self, seconds, offsets, every=16.0, noise=None, **kw):
        """Samples from every source in `offsets` (raw offset, or a function of time), and
        updates at the engine's wake-up times, as the daemon's timer does. `noise`: a
        random.Random for exponential queueing (mean 100 us) each way."""
        end = self.t + seconds
        while self.t < end:
            due = self.t + every
            while self.result.wakeup is not None and self.result.wakeup < due:
                self.update(self.result.wakeup)
            self.t = due
            for key, off in offsets.items():
                value = off(self.t) if callable(off) else off
                if noise is not None:
                    e1, e2 = noise.expovariate(1e4), noise.expovariate(1e4)
                    kw["delay"] = DELAY + e1 + e2
                    value += (e1 - e2) / 2
                self.sample(key, value, **kw)
                self.update(self.t)
        return self.result

    def actions(self, kind):
        return [a for a in self.done if isinstance(a, kind)]


def test_unsynchronised_until_a_source_is_selected():
    w = World(a=None)
    assert w.result.system.stratum == 16 and w.result.system.leap == 3
    assert not w.result.system.synchronised
    r = w.run(64, {"a": 0.0})
    assert r.system_peer == "a"
    assert r.system.stratum == 2 and r.system.leap == 0
    assert r.system.refid == bytes([192, 0, 2, 1])
    assert r.system.root_delay == pytest.approx(DELAY)
    assert r.system.reference_time == unix_to_ntp(w.t)
    assert r.sources["a"].tally is Tally.SYSPEER
    status = w.actions(SetStatus)[-1]
    assert status.synchronised and status.leap == 0 and status.maxerror < 0.01


def test_refid_of_an_ipv6_upstream_is_md5_of_the_address():
    import ipaddress

    packed = ipaddress.ip_address("2001:db8::1").packed
    assert refid_for("2001:db8::1") == hashlib.md5(packed).digest()[:4]
    assert refid_for("198.51.100.7") == bytes([198, 51, 100, 7])


def test_falseticker_is_marked_and_never_followed():
    w = World(a=None, b=None, c=None, liar=None)
    r = w.run(160, {"a": 0.0, "b": 0.0, "c": 0.0, "liar": 0.050})
    assert r.sources["liar"].tally is Tally.FALSETICKER
    assert r.system_peer != "liar"
    assert abs(r.offset) < 1e-4


def test_issue_figures_asymmetric_path_both_servers_selected_from_the_first_update():
    # Issue 10: -2.485 ms over a path 5 ms longer one way (delay 5.137 ms, root dispersion
    # 0.488 ms) and +0.011 ms (delay 0.176 ms) from a near server.
    w = World(far=None, near=None)
    peers = []
    for i in range(1, 40):
        while w.result.wakeup is not None and w.result.wakeup < T0 + 16.0 * i:
            w.update(w.result.wakeup)
        w.t = T0 + 16.0 * i
        w.sample("far", -2.485e-3, delay=5.137e-3, root_dispersion=0.488e-3)
        w.sample("near", 0.011e-3, delay=0.176e-3)
        r = w.update(w.t)
        if r.sources["near"].samples >= 4:
            peers.append(r.system_peer)
            assert {r.sources[k].tally for k in ("far", "near")} <= {Tally.SYSPEER,
                                                                      Tally.CANDIDATE}
    assert peers == ["near"] * len(peers) and len(peers) > 30
    assert r.system.stratum == 2
    assert abs(r.offset) < 0.5e-3  # the near server's weight dominates


def test_prefer_source_decides_the_offset():
    w = World(a=None, b=None, p=SourceSpec("192.0.2.9", prefer=True))
    r = w.run(160, {"a": 0.0, "b": 0.0, "p": 0.0003})
    assert r.system_peer == "p"
    assert r.system.refid == bytes([192, 0, 2, 9])


def test_noselect_is_measured_but_never_selected():
    w = World(n=SourceSpec("192.0.2.5", noselect=True))
    r = w.run(160, {"n": 0.0})
    assert r.system_peer is None and r.system.stratum == 16
    assert r.sources["n"].samples > 0 and r.sources["n"].tally is Tally.REJECT


def test_minsane_requires_that_many_truechimers():
    w = World(SyncConfig(tos=TosConfig(minsane=2)), a=None)
    assert w.run(160, {"a": 0.0}).system_peer is None


def test_stratum_ceiling_rejects_a_source():
    w = World(SyncConfig(tos=TosConfig(ceiling=3)), a=None)
    assert w.run(160, {"a": 0.0}, stratum=5).system_peer is None


def test_panic_without_g_is_reported_not_applied():
    w = World(a=None)
    r = w.run(64, {"a": 2000.0})
    assert isinstance(r.panic, PanicExit)
    assert "2000" in str(r.panic) and "-g" in str(r.panic)
    assert not w.actions(Step)


def test_g_steps_the_first_time():
    w = World(SyncConfig(panic_gate=True), a=None)
    w.run(64, {"a": 2000.0})
    [step] = w.actions(Step)
    assert step.offset == pytest.approx(2000.0, abs=1e-3)


def test_capital_g_steps_a_small_first_offset_once_then_slews():
    w = World(SyncConfig(force_step_once=True), a=None)
    w.run(64, {"a": 0.003})
    [step] = w.actions(Step)
    assert step.offset == pytest.approx(0.003, abs=1e-4)
    r = w.run(640, {"a": 0.003})
    assert len(w.actions(Step)) == 1 and abs(r.offset) < 1e-4


def test_without_capital_g_a_small_first_offset_is_slewed_not_stepped():
    w = World(a=None)
    r = w.run(640, {"a": 0.003})
    assert not w.actions(Step) and abs(r.offset) < 1e-4


def test_start_up_step_then_slews():
    w = World(a=None)
    w.run(64, {"a": 30.0})
    assert w.engine.model.last_step_at() is not None
    r = w.run(160, {"a": 30.0})
    assert abs(r.offset) < 1e-4 and not r.stepped


def test_later_offset_waits_stepout_then_steps():
    w = World(a=None)
    w.run(320, {"a": 0.0})
    stepped_at = []
    for _ in range(30):
        r = w.run(16, {"a": 0.5})
        if r.stepped:
            stepped_at.append(w.t)
        elif stepped_at == []:
            assert r.system.stratum in (2, 16)
    assert len(stepped_at) == 1
    assert 300 <= stepped_at[0] - (T0 + 320) <= 300 + 6 * 16


def test_a_spike_lowering_the_poll_leaves_the_source_reachable_until_8_polls_are_missed():
    w = World(a=SourceSpec("192.0.2.1", minpoll=6, maxpoll=10))
    w.run(20000, {"a": 0.0}, noise=random.Random(3), every=64)
    assert w.engine.sources["a"].poll == 10
    assert w.sample("a", 0.010).name == "SPIKE"
    assert w.engine.sources["a"].poll == 6  # look again soon...
    spiked = w.t
    # ...but the association's next request was already due 1024 s on: from there,
    # 8 polls unanswered (the first at 1024 s, 7 at 64 s) before it is unreachable.
    assert w.update(spiked + 1024 + 7 * 64).system_peer == "a"
    assert w.update(spiked + 1024 + 7 * 64 + 60).system_peer is None


def test_a_source_back_from_unreachable_stays_reachable_while_its_association_backs_off():
    # The association polls ever less often while nobody answers (towards maxpoll): the
    # request after the first reply back may be 2^maxpoll s away.
    w = World(a=SourceSpec("192.0.2.1", minpoll=6, maxpoll=10))
    w.run(1000, {"a": 0.0}, noise=random.Random(3), every=64)
    assert w.engine.sources["a"].poll < 10
    w.t += 3000
    assert w.update(w.t).system_peer is None  # unreachable
    w.sample("a", 0.0)
    back = w.t
    assert w.update(back).system_peer == "a"
    assert w.update(back + 1024 + 6 * 2 ** w.engine.sources["a"].poll).system_peer == "a"


def test_a_source_predicted_on_a_rough_frequency_keeps_an_interval_that_holds_the_truth():
    # Four iburst samples whose queueing noise looks like a 40 ppm drift, then silence:
    # two polls on, the prediction is 5 ms off. Its interval widens with the prediction's
    # uncertainty, so the honest source is not outvoted as a falseticker.
    w = World(a=None, b=None, c=None)
    for i in range(4):
        w.t = T0 + 2.0 * i
        w.sample("a", 80e-6 * i)
        w.sample("b", 0.0)
        w.sample("c", 0.0)
        w.update(w.t)
    r = w.run(128, {"b": 0.0, "c": 0.0})
    assert r.sources["a"].offset > 4e-3
    assert r.sources["a"].tally is Tally.CANDIDATE


def test_the_first_selection_waits_for_sources_still_arriving():
    # A liar's samples happen to arrive first: following it, or outvoting the first honest
    # server to be ready with it, would be acting on a minority.
    w = World(a=None, b=None, c=None, liar=None)
    for i in range(4):
        w.t = T0 + 2.0 * i
        w.sample("liar", 0.050)
        if i < 2:
            for key in "abc":
                w.sample(key, 0.0)
        r = w.update(w.t)
    assert r.system_peer is None and not w.actions(SetFrequency)[1:]
    w.t += 2.0
    w.sample("a", 0.0)
    w.sample("a", 0.0)
    r = w.update(w.t)  # a and the liar ready, b and c arriving: still no majority
    assert r.system_peer is None
    assert {s.tally for s in r.sources.values()} == {Tally.REJECT}
    for key in "bc":
        w.sample(key, 0.0)
        w.sample(key, 0.0)
    r = w.update(w.t)
    assert r.system_peer in ("a", "b", "c") and r.sources["liar"].tally is Tally.FALSETICKER
    assert abs(r.offset) < 1e-4


def test_without_anyone_arriving_a_split_is_two_falsetickers():
    w = World(a=None, b=None)
    r = w.run(160, {"a": 0.0, "b": 0.050})
    assert r.system_peer is None
    assert {r.sources[k].tally for k in "ab"} == {Tally.FALSETICKER}


def test_holdover_keeps_the_frequency_when_sources_go():
    w = World(a=None)
    w.run(3000, {"a": lambda t: 40e-6 * (t - T0)})
    assert w.engine.frequency_ppm == pytest.approx(40.0, abs=0.05)
    t = w.t + 16 * 8 * 2 ** w.engine.sources["a"].poll + 60
    r = w.engine.update(t)
    assert r.system_peer is None and r.system.stratum == 16
    assert [a.synchronised for a in r.actions if isinstance(a, SetStatus)] == [False]
    assert r.frequency == pytest.approx(40.0, abs=0.05)
    freq = [a for a in r.actions if isinstance(a, SetFrequency)]
    assert all(a.ppm == pytest.approx(40.0, abs=0.05) for a in freq)


def test_local_clock_only_when_nothing_better():
    cfg = SyncConfig(local_clock=LocalClockDriver(stratum=7))
    w = World(cfg, a=None)
    assert w.engine.update(T0 + 1).system.stratum == 8
    r = w.run(64, {"a": 0.0})
    assert r.system.stratum == 2 and r.system_peer == "a"


def test_orphan_mode_after_orphanwait():
    w = World(SyncConfig(tos=TosConfig(orphan=10, orphanwait=300)))
    assert w.engine.update(T0 + 100).system.stratum == 16
    r = w.engine.update(T0 + 301)
    assert r.system.stratum == 10 and r.system.refid == bytes([127, 0, 0, 1])


def test_orphan_mode_starts_when_orphanwait_is_over_not_at_the_next_hold_wakeup():
    """Nothing answers, so only wake-ups run the engine: one must fall on orphanwait."""
    w = World(SyncConfig(tos=TosConfig(orphan=10, orphanwait=100)))
    r = w.result
    while r.system.stratum == 16:
        assert r.wakeup is not None and r.wakeup <= T0 + 100
        r = w.update(r.wakeup)
    assert (w.t, r.system.stratum) == (T0 + 100, 10)


def test_local_clock_outside_floor_and_ceiling_is_never_used():
    """`fudge 127.127.1.0 stratum 16` (or 15): ntpd never selects it; orphan mode may."""
    for stratum in (15, 16):
        w = World(SyncConfig(local_clock=LocalClockDriver(stratum=stratum),
                             tos=TosConfig(orphan=12, orphanwait=0)))
        r = w.update(T0 + 1)
        assert (r.system.stratum, r.system.refid) == (12, bytes([127, 0, 0, 1]))


def _orphans(*names, local="10.0.0.2"):
    """An engine with `tos orphan 10`, reaching sources "low" (10.0.0.1) and "high"
    (10.0.0.3) from `local`."""
    w = World(SyncConfig(tos=TosConfig(orphan=10, orphanwait=0)))
    for name, address in (("low", "10.0.0.1"), ("high", "10.0.0.3")):
        if name in names:
            w.engine.add_source(name, SourceSpec(address), local_address=local)
    return w


def test_orphan_parent_is_the_source_with_the_lowest_address_below_ours():
    w = _orphans("low", "high")
    r = w.run(128, {"low": 0.001, "high": -0.002}, stratum=10)
    assert (r.system_peer, r.system.stratum, r.system.refid) == ("low", 11, bytes([10, 0, 0, 1]))


def test_with_the_lowest_address_we_are_the_orphan_parent():
    w = _orphans("low", "high", local="10.0.0.0")
    r = w.run(128, {"low": 0.001, "high": -0.002}, stratum=10)
    assert (r.system_peer, r.system.stratum, r.system.refid) == (None, 10, bytes([127, 0, 0, 1]))


def test_a_source_above_the_orphan_stratum_is_never_selected():
    """It could have the orphan parent among its ancestors: a timing loop."""
    w = _orphans("high", local="10.0.0.0")
    r = w.run(128, {"high": 0.0}, stratum=11)
    assert r.system_peer is None and r.sources["high"].tally == Tally.REJECT


def test_a_source_below_the_orphan_stratum_is_a_normal_candidate():
    w = _orphans("high")
    r = w.run(128, {"high": 0.0}, stratum=3)
    assert (r.system_peer, r.system.stratum) == ("high", 4)


def _voting(start, leaps=(1, 1, 0), seconds=160, leap_list=None):
    w = World(start=start, a=None, b=None, c=None)
    w.engine.set_leap_file(leap_list)
    return _vote(w, seconds, leaps)


def _vote(w, seconds, leaps=(1, 1, 0)):
    """Samples from a, b and c every 16 s, with these LIs, and an update after each."""
    for _ in range(int(seconds // 16)):
        w.t += 16
        for key, leap in zip("abc", leaps, strict=True):
            w.sample(key, 0.0, leap=leap)
        w.update(w.t)
    return w


def test_a_majoritys_leap_on_5_december_is_remembered_but_neither_served_nor_armed():
    w = _voting(DEC_5_2016)
    assert w.result.system.stratum == 2 and w.result.system.leap == 0
    assert {a.leap for a in w.actions(SetStatus)} == {0}
    assert w.result.leap.at == JAN_2017
    assert w.result.leap.next_change == JAN_2017 - DAY  # to be served and armed then


def test_a_majority_announcing_from_5_december_is_served_on_31_december_until_the_leap():
    # Upstreams announcing all month, as RFC 5905 allows; the weeks between are skipped
    # (their silence unsynchronises us, and the first samples after it select them again).
    w = _voting(DEC_5_2016)
    assert w.result.system.leap == 0
    w.update(JAN_2017 - DAY - 600)  # 30 December, 23:50
    assert _vote(w, 480).result.system.leap == 0
    assert _vote(w, 160).result.system.leap == 1  # 31 December, 00:00:40
    assert w.actions(SetStatus)[-1].leap == 1
    w.update(JAN_2017 - 600)
    assert _vote(w, 576).result.system.leap == 1  # 23:59:36
    w.update(JAN_2017 + 16)  # the majority still says LI=1 from before midnight
    assert _vote(w, 160).result.system.leap == 0
    assert w.actions(SetStatus)[-1].leap == 0


def test_on_31_december_the_kernel_is_armed_to_insert():
    w = _voting(JAN_2017 - 3600)
    assert w.result.system.leap == 1
    assert w.actions(SetStatus)[-1] == SetStatus(True, pytest.approx(0.001, abs=1e-3),
                                                 pytest.approx(0.0, abs=1e-4), 1)


def test_a_leapfile_with_a_negative_leap_serves_li_2_and_arms_sta_del_on_30_june_only():
    w = _voting(JUL_2027 - DAY - 3600, leaps=(0, 0, 0), leap_list=DELETE_2027)
    assert w.result.system.leap == 0  # 29 June: known, neither served nor armed
    assert w.result.leap.at == JUL_2027
    assert {a.leap for a in w.actions(SetStatus)} == {0}
    w.run(3600 + 160, {"a": 0.0, "b": 0.0, "c": 0.0})
    assert w.result.system.leap == 2
    assert w.actions(SetStatus)[-1].leap == 2  # 30 June: STA_DEL
    assert w.actions(SetTai) == [SetTai(37)]  # once, from the list


def test_the_kernel_stays_armed_when_no_source_is_left():
    w = _voting(JAN_2017 - 3600)
    r = w.update(w.t + 3000)  # every source silent far beyond its reach
    assert r.system_peer is None
    assert w.actions(SetStatus)[-1] == SetStatus(False, 16.0, 16.0, 1)


def test_a_sample_across_the_leap_is_not_used_and_counted():
    w = _voting(JAN_2017 - 320)  # the last samples 160 s before midnight
    w.t = JAN_2017 + 0.001
    assert w.sample("a", 0.0, delay=0.004) is None
    assert w.engine.leap.ignored == 1
    w.t = JAN_2017 + 10
    assert w.sample("a", 0.0) is not None


def test_once_sets_the_clock_and_is_done():
    w = World(SyncConfig(once=True), a=None)
    r = w.run(64, {"a": 0.05})
    assert r.done
    [slew] = w.actions(Slew)
    assert slew.offset == pytest.approx(0.05, abs=1e-5)
    assert not w.actions(Step)
    w2 = World(SyncConfig(once=True), a=None)
    w2.run(64, {"a": 5.0})
    assert [a.offset for a in w2.actions(Step)] == [pytest.approx(5.0, abs=1e-5)]
    assert w2.result.done


def test_observe_only_reports_but_never_acts():
    w = World(SyncConfig(discipline=False), a=None)
    r = w.run(160, {"a": 0.02})
    assert w.done == []
    assert r.offset == pytest.approx(0.02, abs=1e-4)
    assert w.engine.model.correction(w.t) == 0.0


def test_frequency_is_learned_and_corrected():
    w = World(a=None)
    r = w.run(2000, {"a": lambda t: -100e-6 * (t - T0)})
    assert r.frequency == pytest.approx(-100.0, abs=0.05)
    assert abs(r.offset) < 1e-5


def test_poll_rises_while_the_clock_is_predictable():
    w = World(a=SourceSpec("192.0.2.1", minpoll=4, maxpoll=6))
    rng = random.Random(5)
    polls = []
    for _ in range(100):
        poll = w.result.polls.get("a", 4)
        w.run(2.0**poll, {"a": 0.001}, every=2.0**poll, noise=rng)
        polls.append(w.result.polls["a"])
    assert polls[0] == 4 and polls[-1] == 6


def test_sample_sent_before_a_step_is_ignored():
    w = World(a=None)
    w.run(64, {"a": 30.0})
    stepped = w.engine.model.last_step_at()
    assert stepped is not None
    w.t = stepped + 0.001  # arrived just after the step: its request left before it
    assert w.sample("a", 30.0) is None


def test_unknown_source_sample_is_ignored():
    w = World()
    sample = Sample(0, DELAY, 0, T0, 1, 0, -20, 0, 0, b"", 0)
    assert w.engine.on_sample("nobody", sample) is None


def test_tinker_step_from_config():
    w = World(SyncConfig(tinker=TinkerConfig(step=0.0)), a=None)
    r = w.run(64, {"a": 1.0})
    assert not w.actions(Step)
    assert r.system_peer == "a" and math.isclose(r.offset, 1.0, abs_tol=0.01)


def test_driftfile_frequency_is_applied_at_start_and_trusted():
    w = World(SyncConfig(initial_frequency=-37.5), a=None)
    assert w.done[0] == SetFrequency(-37.5)
    # The raw clock needs exactly that: nothing to correct, and the estimate stays.
    r = w.run(128, {"a": lambda t: 0.001 - 37.5e-6 * (t - T0)})
    assert r.frequency == pytest.approx(-37.5, abs=0.01)
    # the 1 ms is slewed out at 5 ppm at most (issue 13): 0.64 ms of it by now
    assert abs(r.offset) < 0.5e-3
