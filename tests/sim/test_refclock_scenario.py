"""The simulator's GPS receiver (1 us NMEA jitter, 100 ns PPS) read by the real NMEA and
PPS drivers: pyntpd becomes a stratum 1 server following the pulses, numbered by the NMEA
prefer peer, and holds the clock to the simulated PPS within a microsecond."""

from pyntpd.sim.scenarios import HOUR, SCENARIOS, run


def test_gps_with_pps_makes_a_stratum_1_server_with_refid_pps_within_a_microsecond():
    report, _sim = run(SCENARIOS["stratum1-gps-pps"], 1, duration=2 * HOUR)
    assert report.served == "stratum 1, refid PPS"
    assert report.tallies == {"NMEA(0)": "+", "PPS(0)": "*"}
    assert report.rms < 1e-6  # against the simulated PPS, from 2000 s on
    assert report.steps == () and report.panic is None
    assert any("serves            stratum 1, refid PPS" in line for line in report.lines())


def test_pulses_before_the_prefer_peer_is_followed_are_dropped_and_counted():
    _, sim = run(SCENARIOS["stratum1-gps-pps"], 1, duration=0.5 * HOUR)
    assert sim.refclocks is not None
    pulses = sim.refclocks.pps_peer
    # the first pulses come before the NMEA clock has been polled and selected
    assert pulses.drops.get("no_prefer_peer", 0) >= 16
    assert sim.refclocks.pps_driver.used > 1000


def test_the_same_seed_gives_the_same_run():
    a, _ = run(SCENARIOS["stratum1-gps-pps"], 3, duration=0.5 * HOUR)
    b, _ = run(SCENARIOS["stratum1-gps-pps"], 3, duration=0.5 * HOUR)
    assert a == b
