"""NTP timestamps (RFC 5905 §6): 64-bit 32.32 fixed point and 32-bit 16.16 "shorts".

NTP seconds count from 1900-01-01 and wrap every 2**32 s (eras; the first wrap is in
2036-02-07). A 64-bit timestamp alone does not say which era it is in, so every conversion
to an absolute time takes a pivot (normally "now") and picks the era that lands closest to
it. Differences between two timestamps are computed modulo 2**64 and read as signed, which
is exact for any two instants less than 68 years apart, whatever the era.
"""

from __future__ import annotations

NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
ERA_SECONDS = 1 << 32
_FRAC = 1 << 32
_MASK64 = (1 << 64) - 1
_HALF64 = 1 << 63
_NS_PER_S = 1_000_000_000
_OFFSET_NS = NTP_UNIX_OFFSET * _NS_PER_S

SHORT_MAX = 0xFFFF_FFFF


def unix_to_ntp(unix_seconds: float) -> int:
    """Unix time (float seconds) -> 64-bit NTP timestamp, wrapped into its era."""
    ntp = unix_seconds + NTP_UNIX_OFFSET
    seconds = int(ntp // 1)
    fraction = int((ntp - seconds) * _FRAC)
    return ((seconds << 32) | fraction) & _MASK64


def unix_ns_to_ntp(unix_ns: int) -> int:
    """Unix time in integer nanoseconds -> 64-bit NTP timestamp, without float rounding.

    Kernel timestamps (SO_TIMESTAMPNS, clock_gettime) arrive in nanoseconds; keeping them
    integral preserves sub-nanosecond resolution of the 32-bit fraction.
    """
    # (s * 1e9 + n) * 2**32 // 1e9 == s << 32 | (n << 32) // 1e9: one division, no divmod.
    return (((unix_ns + _OFFSET_NS) << 32) // _NS_PER_S) & _MASK64


def ntp_to_unix(timestamp: int, pivot_unix: float) -> float:
    """64-bit NTP timestamp -> Unix seconds, in the era closest to `pivot_unix`."""
    pivot = unix_to_ntp(pivot_unix)
    return pivot_unix + ntp_diff(timestamp, pivot)


def ntp_diff(a: int, b: int) -> float:
    """a - b in seconds, for timestamps less than 68 years apart, across era boundaries."""
    d = (a - b) & _MASK64
    if d >= _HALF64:
        d -= 1 << 64
    return d / _FRAC


def ntp_add(timestamp: int, seconds: float) -> int:
    """timestamp + seconds, wrapped into 64 bits."""
    return (timestamp + round(seconds * _FRAC)) & _MASK64


def seconds_to_short(seconds: float) -> int:
    """Seconds -> NTP short (16.16, unsigned), saturating at both ends.

    Root delay and dispersion are never negative on the wire; a negative value is clamped
    to zero rather than wrapped into an enormous one.
    """
    if seconds <= 0.0:
        return 0
    value = int(seconds * 65536.0 + 0.5)
    return value if value < SHORT_MAX else SHORT_MAX


def short_to_seconds(short: int) -> float:
    """NTP short (16.16) -> seconds."""
    return (short & SHORT_MAX) / 65536.0
