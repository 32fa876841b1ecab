"""SimClock: the Clock interface against simulated true time."""

import random

import pytest

from pyntpd.clock.base import Clock
from pyntpd.clock.simclock import DEFAULT_EPOCH_NS, SimClock


def test_is_a_clock():
    assert isinstance(SimClock(), Clock)


def test_frequency_error_and_correction():
    c = SimClock(offset=0.0, frequency_ppm=100.0)
    c.advance_to(1000.0)
    assert c.phase == pytest.approx(0.1, rel=1e-9)
    c.adjust_frequency(-100.0)  # (1 + 100e-6)(1 - 100e-6) - 1 = -1e-8
    c.advance_to(2000.0)
    assert c.phase == pytest.approx(0.1 - 1e-8 * 1000, rel=1e-9)


def test_frequency_correction_is_clamped_like_the_kernel():
    c = SimClock()
    c.adjust_frequency(1e4)
    assert c.correction_ppm == 500.0


def test_step_and_now_in_nanoseconds():
    c = SimClock(offset=0.25)
    c.step(-0.25)
    c.advance_to(10.0)
    assert c.now() == DEFAULT_EPOCH_NS + 10_000_000_000
    assert c.steps == [-0.25]


def test_slew_runs_at_500_ppm_and_stops():
    c = SimClock()
    c.slew(0.001)
    c.advance_to(1.0)
    assert c.phase == pytest.approx(0.0005)
    c.advance_to(10.0)
    assert c.phase == pytest.approx(0.001)
    c.slew(-0.0002)  # replaces, adjtime-style
    c.advance_to(20.0)
    assert c.phase == pytest.approx(0.0008)


def test_wander_is_a_seeded_random_walk():
    a = SimClock(wander=1e-9, rng=random.Random(4))
    b = SimClock(wander=1e-9, rng=random.Random(4))
    seen = []
    a.on_second = lambda s, p: seen.append(s)
    a.advance_to(3600.0)
    b.advance_to(3600.0)
    assert a.natural == b.natural != 0.0
    assert seen == list(range(1, 3601))
    assert abs(a.natural) < 10 * 1e-9 * 60  # about sigma * sqrt(3600)


def test_true_at_local_inverts_now():
    c = SimClock(offset=0.5, frequency_ppm=50.0)
    c.advance_to(100.0)
    target = c.now() / 1e9 + 10.0
    t = c.true_at_local(target)
    c.advance_to(t)
    assert c.now() / 1e9 == pytest.approx(target, abs=1e-6)


def test_sync_status_is_recorded():
    c = SimClock()
    c.set_sync_status(True, 0.01, 1e-5, 0)
    assert (c.synchronised, c.maxerror, c.esterror, c.leap) == (True, 0.01, 1e-5, 0)
