"""The simulator end to end: the real Association, Responder and SyncEngine under
simulated time, against the targets of issue 3 where a short run can show them."""

import math
import time

import pytest

from pyntpd.sim.scenarios import HOUR, SCENARIOS, run


def short(name, hours, seed=1, **kw):
    report, sim = run(SCENARIOS[name], seed, duration=hours * HOUR, **kw)
    return report, sim


@pytest.mark.parametrize(("minpoll", "maxpoll", "target"), [
    (4, 4, 8e-6),  # issue 3: chronyd 10.5-12.1 us, ntpsec 13.9-15.3 us
    (4, 6, 16e-6),  # chronyd 23.8 us, ntpsec 20.4 us
    (6, 10, 64e-6),  # chronyd 80-117 us, ntpsec 156-201 us
])
def test_lan1_full_day_meets_the_target_in_well_under_a_minute(minpoll, maxpoll, target):
    started = time.monotonic()
    report, _ = run(SCENARIOS["lan1"], 1, minpoll=minpoll, maxpoll=maxpoll)
    assert time.monotonic() - started < 60
    assert report.duration == 86400 and report.stats_from == 2000
    assert report.rms < target
    assert report.first_sync is not None and report.first_sync < 400
    assert abs(report.frequency_error) < 0.1
    assert report.steps == ()


def test_lan1_fixed_poll_a_few_hours_is_already_well_under_target():
    report, _ = short("lan1", 4, minpoll=4, maxpoll=4)
    assert report.rms < 7e-6


def test_lan1_poll_rises_to_maxpoll_when_it_may():
    report, _ = short("lan1", 6, minpoll=4, maxpoll=6)
    assert list(report.final_polls.values()) == [6]


def test_same_seed_same_run_other_seed_other_run():
    a, _ = short("lan1", 1, seed=7)
    b, _ = short("lan1", 1, seed=7)
    c, _ = short("lan1", 1, seed=8)
    assert a == b
    assert a.rms != c.rms


def test_lan4_selects_one_peer_and_three_candidates():
    report, _ = short("lan4", 2, minpoll=4, maxpoll=4)
    assert sorted(report.tallies.values()) == ["*", "+", "+", "+"]
    assert report.rms < 8e-6


def test_falseticker_is_marked_and_does_not_move_the_clock():
    report, _sim = run(SCENARIOS["falseticker"], 1, duration=3 * HOUR, minpoll=4, maxpoll=6)
    assert report.tallies["192.0.2.66#3"] == "x"
    assert report.max_abs < 100e-6


def test_falseticker_by_an_hour_later_is_still_ignored():
    report, _ = run(SCENARIOS["falseticker"], 1, duration=14 * HOUR, stats_from=12 * HOUR,
                    minpoll=6, maxpoll=6)
    assert report.tallies["192.0.2.66#3"] == "x"
    assert report.steps == () and report.max_abs < 200e-6


def test_outage_holds_over_on_the_last_frequency():
    # 4 servers vanish from 8 h to 14 h; look at the worst of the holdover.
    report, sim = run(SCENARIOS["outage"], 1, duration=14 * HOUR, stats_from=8 * HOUR)
    assert report.steps == ()
    assert report.max_abs < 5e-3  # 6 h of a 1e-9/s random walk: ~2 ms typical
    result = sim.engine.update(sim.local())
    assert result.system_peer is None and result.system.stratum == 16


def test_cold_start_30s_off_steps_at_once():
    report, _ = short("cold-start-far", 1)
    assert len(report.steps) == 1 and report.steps[0][1] == pytest.approx(30.0, abs=1e-3)
    assert report.first_sync is not None and report.first_sync < 60


def test_cold_start_2000s_off_refuses_without_g():
    report, _ = short("cold-start-2000", 1)
    assert report.panic is not None and "-g" in report.panic
    assert report.steps == ()


def test_cold_start_2000s_off_steps_with_g():
    report, _ = short("cold-start-2000-g", 1)
    assert len(report.steps) == 1 and report.steps[0][1] == pytest.approx(2000.0, abs=1e-3)
    assert report.rms < 50e-6


def test_wan_stays_within_a_millisecond():
    report, _ = short("wan", 6)
    assert report.max_abs < 1e-3
    assert not math.isnan(report.rms)


def test_server_that_goes_away_and_one_that_steps():
    report, _ = run(SCENARIOS["server-goes-away"], 1, duration=16 * HOUR,
                    stats_from=5 * HOUR, minpoll=6, maxpoll=6)
    assert report.tallies["192.0.2.1#0"] == " "  # gone: unreachable
    assert report.tallies["192.0.2.2#1"] == "x"  # stepped by 1 s: outvoted
    assert report.steps == () and report.max_abs < 200e-6


def test_single_server_step_is_followed_after_stepout():
    report, _ = run(SCENARIOS["server-steps"], 1, duration=8 * HOUR, stats_from=0)
    [(when, amount)] = report.steps
    assert amount == pytest.approx(0.5, abs=1e-3)
    # the first sample after the step may be a 1024 s poll away (issue 13's polling)
    assert 6 * HOUR + 300 <= when <= 6 * HOUR + 1024 + 1500


def test_driftfile_frequency_shortens_the_start():
    from pyntpd.sync.engine import SyncConfig

    cold, _ = short("lan1", 1, minpoll=4, maxpoll=4)
    warm, _ = short("lan1", 1, minpoll=4, maxpoll=4,
                    config=SyncConfig(initial_frequency=-100.0))
    assert warm.first_sync is not None and cold.first_sync is not None
    assert warm.first_sync <= cold.first_sync


# --- issue 10: asymmetric paths, sub-precision noise, no false loss of sync ----------------

def test_asymmetric_path_both_honest_servers_are_selected_all_along():
    # One server's way back is 5 ms longer than its way there: it measures -2.5 ms.
    report, _ = run(SCENARIOS["asymmetric"], 1, duration=6 * HOUR)
    assert sorted(report.tallies.values()) == ["*", "+"]
    assert report.synced_at is not None and report.synced_at < 30
    assert report.unsynchronised == 0 and report.losses == 0
    assert report.max_abs < 20e-6  # the near server's weight keeps the bias small


def test_chronyd_sub_precision_noise_costs_no_reply():
    # About half of the chronyd server's replies carry T3 < T2: none of them is dropped.
    report, sim = run(SCENARIOS["chronyd"], 1, duration=6 * HOUR)
    [server] = sim.servers.values()
    [assoc] = sim.assocs.values()
    assert 0.4 * report.exchanges < server.reversed < 0.6 * report.exchanges
    assert assoc.drops == {}
    assert report.samples == report.exchanges  # the path loses nothing either


@pytest.mark.parametrize("seed", [1, 7])
@pytest.mark.parametrize("name", ["chronyd", "chronyd-300ppm", "chronyd-0.5s"])
def test_one_honest_reachable_server_is_never_lost_after_the_first_selection(name, seed):
    # Issue 10: 14 s-2 min at poll 16-64 s, 3-7 min with a 300 ppm clock, twice 24.5 min
    # with the clock 0.5 s off -- every loss of an honest, reachable server is false.
    # (With half of the replies dropped for their noise, seed 7 lost the server in all
    # three: 9 requests in a row without a sample.)
    report, _ = run(SCENARIOS[name], seed)
    assert report.synced_at is not None and report.synced_at < 30
    assert (report.unsynchronised, report.losses) == (0.0, 0)
    assert len(report.steps) == (1 if name == "chronyd-0.5s" else 0)


@pytest.mark.parametrize("seed", range(1, 13))
@pytest.mark.parametrize("polls", [(4, 6), (6, 10)])
def test_four_honest_servers_and_a_liar_no_loss_and_no_honest_falseticker(polls, seed):
    # Issue 10: an honest server marked a falseticker while the initial 0.1 s was being
    # slewed, no source for up to 32 s. With 30 % loss the sources become ready one by one,
    # some on a couple of iburst samples whose prediction is still rough.
    report, sim = run(SCENARIOS["chronyd-falseticker"], seed, duration=HOUR,
                      minpoll=polls[0], maxpoll=polls[1], keep_updates=True)
    assert report.synced_at is not None and report.synced_at < 600
    assert (report.unsynchronised, report.losses) == (0.0, 0)
    marked = {key for _, r in sim.trace.updates for key, s in r.sources.items()
              if s.tally == "x"}
    assert marked == {"192.0.2.66#4"}
    # At most the start-up step (when the sources took minutes to be ready), and the
    # liar's 50 ms never followed.
    assert len(report.steps) <= 1 and report.max_abs < 1e-3
