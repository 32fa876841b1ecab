"""The per-source filter, driven by explicit samples."""

import random

import pytest

from pyntpd.sync.filter import MIN_SAMPLES, SPIKE_RESTART, SourceFilter, Verdict

BASE = 0.002  # s, the path's round trip with empty queues


def feed(f, times, offset=lambda t: 0.01 + 50e-6 * t, delay=lambda i: BASE):
    return [f.add(t, offset(t), delay(i)) for i, t in enumerate(times)]


def test_learns_offset_and_frequency_from_clean_samples():
    f = SourceFilter()
    feed(f, [16.0 * i for i in range(40)])
    est = f.estimate(16.0 * 40)
    assert est.offset == pytest.approx(0.01 + 50e-6 * 640, abs=1e-7)
    assert est.frequency == pytest.approx(50e-6, abs=1e-9)
    assert f.ready


def test_not_ready_before_enough_samples():
    f = SourceFilter()
    feed(f, [0.0, 2.0, 4.0][: MIN_SAMPLES - 1])
    assert not f.ready


def test_low_delay_samples_outweigh_congested_ones():
    # Congested samples queue mostly on the way back, so they are biased (by -excess/4 on
    # average: ~-280 us here); the rare uncongested ones are right. The estimate follows
    # the latter.
    rng = random.Random(3)
    f = SourceFilter()
    truth = 0.005
    for i in range(200):
        excess = 0.0 if i % 10 == 0 else rng.uniform(200e-6, 2e-3)
        f.add(16.0 * i, truth - rng.uniform(0, excess / 2), BASE + excess)
    assert f.estimate(16.0 * 200).offset == pytest.approx(truth, abs=20e-6)


def test_a_single_spike_is_rejected():
    f = SourceFilter()
    feed(f, [16.0 * i for i in range(30)], offset=lambda t: 0.0)
    assert f.add(16.0 * 30, 0.2, BASE) is Verdict.SPIKE
    assert f.estimate(16.0 * 31).offset == pytest.approx(0.0, abs=1e-6)


def test_a_persistent_jump_restarts_on_the_new_level():
    f = SourceFilter()
    times = [16.0 * i for i in range(30)]
    feed(f, times, offset=lambda t: 0.0)
    verdicts = [f.add(16.0 * (30 + i), 1.0, BASE) for i in range(SPIKE_RESTART)]
    assert verdicts[:-1] == [Verdict.SPIKE] * (SPIKE_RESTART - 1)
    assert verdicts[-1] is Verdict.RESTARTED
    assert f.estimate(16.0 * 40).offset == pytest.approx(1.0, abs=1e-4)


def test_wander_bank_prefers_a_quiet_model_for_a_quiet_clock():
    rng = random.Random(1)
    f = SourceFilter()
    for i in range(600):
        e1, e2 = rng.expovariate(1e4), rng.expovariate(1e4)
        f.add(16.0 * i, 0.001 + (e1 - e2) / 2, BASE + e1 + e2)
    assert f.wander < 1e-17  # a perfect oscillator: the smallest wanders win
