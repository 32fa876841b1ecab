"""Reference clock drivers (docs/refclocks.md): SHM (28) and GPSD JSON (46); the LOCAL
driver (1) is sync/localclock. Device I/O stays at the edge (shm.ShmSegment, gpsd.GpsdLink);
parsing and sample building are pure."""


def probe(clock_type: int, unit: int) -> str | None:
    """For --check: why the clock would have nothing to read right now, or None. A clock
    that finds nothing at start is still run and retried; this only warns."""
    import socket

    from pyntpd.refclock import gpsd, shm

    if clock_type == 28:
        if not shm.segment_exists(unit):
            return (f"SHM segment 0x{shm.segment_key(unit):08x} does not exist yet: pyntpd "
                    "creates it at start, but nothing writes it (is gpsd running?)")
        return None
    if clock_type == 46:
        try:
            with socket.create_connection(gpsd.GPSD_ADDRESS, timeout=0.5):
                return None
        except OSError as exc:
            return (f"gpsd does not answer at {gpsd.GPSD_ADDRESS[0]}:{gpsd.GPSD_ADDRESS[1]} "
                    f"({exc.strerror or exc}); the driver keeps trying")
    return None
