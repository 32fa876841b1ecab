"""A time source writing ntpd's SHM segment the way gpsd does (mode 1: count bumped before
and after, valid set last), once a second, claiming the reference is OFFSET s ahead of this
host's clock. Run as `python -m tests.refclock.shmwriter UNIT OFFSET SECONDS [PERM]` inside
the test's IPC namespace; it says "attached" once the segment exists (created with PERM,
octal, default 666, if it did not) and stops by itself after SECONDS."""

from __future__ import annotations

import ctypes
import sys
import time

from pyntpd.refclock.shm import IPC_CREAT, ShmTime, segment_key


def attach(unit: int, perm: int = 0o666) -> ShmTime:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmget.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_int)
    libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
    libc.shmat.restype = ctypes.c_void_p
    shmid = libc.shmget(segment_key(unit), ctypes.sizeof(ShmTime), IPC_CREAT | perm)
    if shmid == -1:
        raise OSError(ctypes.get_errno(), "shmget")
    return ShmTime.from_address(libc.shmat(shmid, None, 0))


def write(shm: ShmTime, clock_ns: int, receive_ns: int, leap: int = 0,
          precision: int = -20) -> None:
    shm.mode = 1
    shm.valid = 0
    shm.count += 1
    shm.clockTimeStampSec, rest = divmod(clock_ns, 1_000_000_000)
    shm.clockTimeStampUSec, shm.clockTimeStampNSec = rest // 1000, rest
    shm.receiveTimeStampSec, rest = divmod(receive_ns, 1_000_000_000)
    shm.receiveTimeStampUSec, shm.receiveTimeStampNSec = rest // 1000, rest
    shm.leap, shm.precision = leap, precision
    shm.count += 1
    shm.valid = 1


def main() -> None:
    unit, offset, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    perm = int(sys.argv[4], 8) if len(sys.argv) > 4 else 0o666
    shm = attach(unit, perm)
    print("attached", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = time.time_ns()
        write(shm, now + round(offset * 1e9), now)
        time.sleep(1.0)


if __name__ == "__main__":
    main()
