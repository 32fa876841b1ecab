from hypothesis import given
from hypothesis import strategies as st

from pyntpd.proto.timestamp import (
    NTP_UNIX_OFFSET,
    ntp_add,
    ntp_diff,
    ntp_to_unix,
    seconds_to_short,
    short_to_seconds,
    unix_ns_to_ntp,
    unix_to_ntp,
)

ERA1_START_UNIX = (1 << 32) - NTP_UNIX_OFFSET  # 2036-02-07T06:28:16Z


def test_unix_epoch_is_ntp_second_2208988800():
    assert unix_to_ntp(0.0) == NTP_UNIX_OFFSET << 32


def test_half_second_is_half_the_fraction():
    assert unix_to_ntp(0.5) & 0xFFFFFFFF == 1 << 31


def test_nanoseconds_convert_without_float_rounding():
    assert unix_ns_to_ntp(1_500_000_000) == ((NTP_UNIX_OFFSET + 1) << 32) | (1 << 31)


def test_first_instant_of_era_1_wraps_to_zero():
    assert unix_to_ntp(float(ERA1_START_UNIX)) == 0


def test_era_1_timestamp_resolves_after_2036_with_pivot_there():
    ts = unix_to_ntp(ERA1_START_UNIX + 10.0)
    assert ntp_to_unix(ts, pivot_unix=ERA1_START_UNIX - 100.0) == ERA1_START_UNIX + 10.0


def test_difference_across_the_2036_rollover_is_small():
    before = unix_to_ntp(ERA1_START_UNIX - 1.0)
    after = unix_to_ntp(ERA1_START_UNIX + 1.0)
    assert ntp_diff(after, before) == 2.0
    assert ntp_diff(before, after) == -2.0


@given(st.floats(min_value=0, max_value=4e9), st.floats(min_value=-1e6, max_value=1e6))
def test_add_then_diff_round_trips(base, delta):
    ts = unix_to_ntp(base)
    assert abs(ntp_diff(ntp_add(ts, delta), ts) - delta) < 1e-9


@given(st.floats(min_value=0, max_value=4e9))
def test_to_unix_round_trips_near_pivot(t):
    assert abs(ntp_to_unix(unix_to_ntp(t), pivot_unix=t + 1000.0) - t) < 1e-6


def test_short_saturates_instead_of_wrapping():
    assert seconds_to_short(1e9) == 0xFFFFFFFF


def test_negative_short_is_clamped_to_zero():
    assert seconds_to_short(-1.0) == 0


def test_short_round_trip_to_sixteen_bits():
    assert short_to_seconds(seconds_to_short(0.25)) == 0.25


@given(st.integers(min_value=0, max_value=(1 << 40) * 10**9))
def test_nanosecond_conversion_matches_the_seconds_and_fraction_split(ns):
    seconds, rest = divmod(ns, 10**9)
    expected = (((seconds + NTP_UNIX_OFFSET) << 32) | ((rest << 32) // 10**9)) & ((1 << 64) - 1)
    assert unix_ns_to_ntp(ns) == expected
