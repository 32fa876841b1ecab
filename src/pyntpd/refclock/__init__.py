"""Reference clock drivers (docs/refclocks.md): SHM (28) and GPSD JSON (46); the LOCAL
driver (1) is sync/localclock. Device I/O stays at the edge (shm.ShmSegment, gpsd.GpsdLink);
parsing and sample building are pure."""
