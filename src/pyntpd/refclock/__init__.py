"""Reference clock drivers (docs/refclocks.md): NMEA (20), PPS (22), SHM (28) and GPSD
JSON (46); the LOCAL driver (1) is sync/localclock. Device I/O stays at the edge
(shm.ShmSegment, gpsd.GpsdLink, nmea.SerialPort, pps.PpsDevice); parsing and sample
building are pure."""


def probe(clock_type: int, unit: int) -> str | None:
    """For --check: why the clock would have nothing to read right now, or None. A clock
    that finds nothing at start is still run and retried; this only warns."""
    import os
    import socket

    from pyntpd.refclock import gpsd, shm

    if clock_type == 28:
        if not shm.segment_exists(unit):
            return (f"SHM segment 0x{shm.segment_key(unit):08x} does not exist yet: pyntpd "
                    "creates it at start, but nothing writes it (is gpsd running?)")
        return None
    if clock_type in (20, 22):
        path = f"/dev/gps{unit}" if clock_type == 20 else f"/dev/pps{unit}"
        if not os.path.exists(path):
            return f"{path} does not exist (yet): the driver keeps trying to open it"
        return None
    if clock_type == 46:
        try:
            with socket.create_connection(gpsd.GPSD_ADDRESS, timeout=0.5):
                return None
        except OSError as exc:
            return (f"gpsd does not answer at {gpsd.GPSD_ADDRESS[0]}:{gpsd.GPSD_ADDRESS[1]} "
                    f"({exc.strerror or exc}); the driver keeps trying")
    return None


# Why a driver refuses a reading, by type: the metrics show each, zeros included. The
# core's own (base.RefclockPeer) apply to all.
CORE_DROPS = ("not_finite", "unsynchronised")
DROP_REASONS: dict[int, tuple[str, ...]] = {
    20: ("no_device", "no_checksum", "bad_checksum", "too_long", "bad_format", "bad_time",
         "bad_date", "no_fix"),
    22: ("bad_time", "stale", "no_prefer_peer"),
    28: ("no_segment", "clash", "bad_mode", "bad_fraction", "bad_values", "stale",
         "difference_limit"),
    46: ("bad_json", "no_class", "bad_version", "no_fix", "bad_time", "bad_toff", "bad_pps"),
}


def drop_reasons(clock_type: int) -> tuple[str, ...]:
    return (*DROP_REASONS.get(clock_type, ()), *CORE_DROPS)
