"""Issue 13: the simulator does not flatter us -- the host's latencies, the kernel's tick,
and a report with the rate error and the packets beside every offset figure."""

import random
from dataclasses import replace

import pytest

from pyntpd.clock.simclock import SimClock
from pyntpd.proto.source import SourceSpec
from pyntpd.sim.network import Host, Path, SimServer, heavy_tail
from pyntpd.sim.runner import Simulation, rate_window
from pyntpd.sim.scenarios import HOUR, SCENARIOS, run
from pyntpd.sync.engine import SyncConfig


def constant(value):
    return lambda rng: value


def first_offsets(host, count=3):
    """The offsets of the first samples of a perfect clock from a perfect server over a
    jitter-free 1 ms path, measured from a host with latencies `host`."""
    clock = SimClock()
    server = SimServer("192.0.2.1", Path(0.001, 0.001))
    sim = Simulation(clock, [(server, SourceSpec("192.0.2.1", minpoll=4, maxpoll=4))],
                     SyncConfig(), random.Random(1), host=host)
    seen = []
    feed = sim.driver.on_sample
    sim.driver.on_sample = lambda key, sample: (seen.append(sample), feed(key, sample))[1]
    sim.run(60.0)
    return [s.offset for s in seen[:count]], [s.delay for s in seen[:count]]


def test_an_ideal_host_measures_a_perfect_clock_as_perfect():
    offsets, delays = first_offsets(Host())
    assert offsets == pytest.approx([0.0] * 3, abs=5e-7)
    assert delays == pytest.approx([0.002] * 3, abs=5e-7)


def test_send_latency_after_t1_reads_as_half_of_it_in_the_offset():
    # t1 is read in user space before send(): the request leaves 20 us later, so the way
    # there looks 20 us longer and the server 10 us ahead.
    offsets, delays = first_offsets(Host(send_latency=constant(20e-6)))
    assert offsets == pytest.approx([10e-6] * 3, abs=5e-7)
    assert delays == pytest.approx([0.002 + 20e-6] * 3, abs=5e-7)


def test_receive_latency_before_the_kernel_timestamp_reads_as_minus_half_of_it():
    offsets, _ = first_offsets(Host(receive_latency=constant(4e-6)))
    assert offsets == pytest.approx([-2e-6] * 3, abs=5e-7)


def test_late_timers_send_later_but_measure_the_same():
    offsets, _ = first_offsets(Host(timer_latency=constant(0.003)))
    assert offsets == pytest.approx([0.0] * 3, abs=5e-7)


def test_heavy_tailed_spikes_come_with_their_probability_and_from_their_scale():
    draw = heavy_tail(0.1, 1e-3, alpha=1.5, cap=10.0)
    rng = random.Random(3)
    values = [draw(rng) for _ in range(20_000)]
    spikes = [v for v in values if v > 0]
    assert 0.09 < len(spikes) / len(values) < 0.11
    assert min(spikes) >= 1e-3
    assert max(spikes) > 100e-3  # Pareto(1.5): one in a thousand beyond 100 times the scale


def test_the_report_gives_packets_per_day_mean_poll_and_rate_error():
    report, sim = run(SCENARIOS["lan1"], 1, duration=2 * HOUR, minpoll=4, maxpoll=4)
    assert report.packets_per_day == pytest.approx(report.exchanges * 12)
    assert report.mean_poll == pytest.approx(2 * HOUR / report.exchanges)
    assert 15.0 < report.mean_poll < 17.0
    assert report.frequency_from is not None and report.frequency_from >= report.first_sync
    rates = sim.trace.frequency_errors[int(report.frequency_from):]
    assert report.frequency_max == pytest.approx(max(abs(r) for r in rates))
    text = "\n".join(report.lines())
    assert "a day, mean poll" in text and "rate error" in text


def test_rates_after_the_first_sync_start_once_the_fast_slew_has_ended():
    assert rate_window(8, []) == 8
    assert rate_window(8, [[1.0, 7.5]]) == 8
    assert rate_window(8, [[1.0, 8.25]]) == 9  # the second from 8 s held fast slewing
    assert rate_window(8, [[100.0, 101.0]]) == 8  # a later one counts against us


def test_real_host_scenario_is_worse_than_the_ideal_one():
    ideal, _ = run(SCENARIOS["lan1"], 1, duration=3 * HOUR, minpoll=4, maxpoll=4)
    real, _ = run(SCENARIOS["lan1-real"], 1, duration=3 * HOUR, minpoll=4, maxpoll=4)
    assert real.rms > ideal.rms + 2e-6


# --- issue 13's targets, on the scenario of its table (lan1: tuned on tune-lan instead) ------


def test_first_sync_with_iburst_from_100_ms_off_is_within_a_millisecond_in_10_s():
    report, sim = run(SCENARIOS["lan1"], 2, duration=120.0, stats_from=0.0)
    assert report.first_sync is not None and report.first_sync <= 10
    assert report.steps == ()  # a fast slew through the tick length, not a step
    assert sim.clock.fast_periods and sim.clock.fast_periods[0][1] < 10


def test_a_clock_without_the_tick_adjustment_still_syncs_at_500_ppm():
    setup = SCENARIOS["lan1"]
    config = replace(setup.config, fast_slew_ppm=500.0)
    report, sim = run(setup, 2, duration=600.0, stats_from=0.0, config=config)
    assert report.first_sync is not None and 200 < report.first_sync < 400
    assert sim.clock.fast_periods == []


@pytest.mark.parametrize(("minpoll", "maxpoll"), [(4, 4), (6, 10)])
def test_after_the_first_sync_the_rate_stays_within_10_ppm(minpoll, maxpoll):
    report, _ = run(SCENARIOS["lan1"], 2, minpoll=minpoll, maxpoll=maxpoll)
    assert report.frequency_max <= 10.0
    assert report.frequency_rms <= 0.5


def test_default_polling_settles_above_700_s_with_the_offset_target_met():
    report, _ = run(SCENARIOS["lan1"], 2)
    assert report.mean_poll >= 700 and report.packets_per_day <= 124
    assert report.rms <= 64e-6


def test_a_2_h_outage_at_default_polling_costs_less_than_chronyds_worst():
    report, _ = run(SCENARIOS["lan1-outage-2h"], 3, stats_from=10 * HOUR)
    assert report.max_abs <= 1030e-6  # chronyd: 230-1030 us over the external seeds
