"""--workers: what the main process publishes reaches the workers whole (daemon/workers.py)."""

from pyntpd.daemon.workers import SharedSystemVars
from pyntpd.sync.engine import SyncConfig, SyncEngine
from pyntpd.sync.leap import LeapList
from pyntpd.sync.localclock import LocalClockDriver

JAN_2017 = 1_483_228_800
JUL_2027 = 1_814_400_000
DELETE_2027 = LeapList(((JAN_2017, 37), (JUL_2027, 36)), expires=1_829_952_000)


def test_a_negative_leap_from_the_leapfile_reaches_the_workers_as_li_2():
    # Issue 10: the engine put -1 here for a negative leap, and publishing it raised
    # struct.error before the engine's wake-up timer was armed again.
    now = JUL_2027 - 12 * 3600.0
    engine = SyncEngine(SyncConfig(discipline=False, local_clock=LocalClockDriver(10)), now)
    engine.set_leap_file(DELETE_2027)
    system = engine.update(now).system
    shared = SharedSystemVars()
    try:
        shared.publish(system)
        _, seen = shared.read(0)
    finally:
        shared.close()
    assert seen is not None and (seen.leap, seen.stratum) == (2, 11)
