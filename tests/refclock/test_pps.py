"""The PPS driver (type 22) and the Linux PPS API layer: the structures and ioctl numbers
against linux/pps.h (compiled here when gcc and the header exist), the ioctl sequence
against a fake device that answers as the kernel's pps core does, and the driver's rules
(edge from flag2, seconds numbered only under a prefer peer, bad pulses counted)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from pyntpd.proto.source import SourceSpec
from pyntpd.refclock import pps
from pyntpd.refclock.base import FLAG4, Fudge, RefclockPeer
from pyntpd.types import Tally

HEADER = Path("/usr/include/linux/pps.h")
NOW = 1_800_000_000.0

LAYOUT_PROGRAM = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/pps.h>
int main(void) {
    printf("ktime %zu %zu %zu %zu\n", sizeof(struct pps_ktime),
           offsetof(struct pps_ktime, sec), offsetof(struct pps_ktime, nsec),
           offsetof(struct pps_ktime, flags));
    printf("kinfo %zu %zu %zu %zu %zu %zu\n", sizeof(struct pps_kinfo),
           offsetof(struct pps_kinfo, assert_sequence), offsetof(struct pps_kinfo, clear_sequence),
           offsetof(struct pps_kinfo, assert_tu), offsetof(struct pps_kinfo, clear_tu),
           offsetof(struct pps_kinfo, current_mode));
    printf("kparams %zu %zu %zu %zu %zu\n", sizeof(struct pps_kparams),
           offsetof(struct pps_kparams, api_version), offsetof(struct pps_kparams, mode),
           offsetof(struct pps_kparams, assert_off_tu), offsetof(struct pps_kparams, clear_off_tu));
    printf("fdata %zu %zu %zu\n", sizeof(struct pps_fdata), offsetof(struct pps_fdata, info),
           offsetof(struct pps_fdata, timeout));
    printf("ioctl %lu %lu %lu %lu\n", (unsigned long)PPS_GETPARAMS,
           (unsigned long)PPS_SETPARAMS, (unsigned long)PPS_GETCAP, (unsigned long)PPS_FETCH);
    printf("flags %d %d %d %d %d\n", PPS_CAPTUREASSERT, PPS_CAPTURECLEAR, PPS_TSFMT_TSPEC,
           PPS_API_VERS_1, PPS_TIME_INVALID);
    return 0;
}
"""


def ours() -> dict[str, list[int]]:
    def off(struct: type[ctypes.Structure], *names: str) -> list[int]:
        return [getattr(struct, n).offset for n in names]

    return {
        "ktime": [ctypes.sizeof(pps.PpsKtime), *off(pps.PpsKtime, "sec", "nsec", "flags")],
        "kinfo": [ctypes.sizeof(pps.PpsKinfo), *off(pps.PpsKinfo, "assert_sequence",
                  "clear_sequence", "assert_tu", "clear_tu", "current_mode")],
        "kparams": [ctypes.sizeof(pps.PpsKparams), *off(pps.PpsKparams, "api_version", "mode",
                    "assert_off_tu", "clear_off_tu")],
        "fdata": [ctypes.sizeof(pps.PpsFdata), *off(pps.PpsFdata, "info", "timeout")],
        "ioctl": [pps.PPS_GETPARAMS, pps.PPS_SETPARAMS, pps.PPS_GETCAP, pps.PPS_FETCH],
        "flags": [pps.PPS_CAPTUREASSERT, pps.PPS_CAPTURECLEAR, pps.PPS_TSFMT_TSPEC,
                  pps.PPS_API_VERS_1, pps.PPS_TIME_INVALID],
    }


def test_structures_and_ioctl_numbers_match_the_kernel_header(tmp_path):
    if not HEADER.exists() or shutil.which("gcc") is None:
        pytest.skip("needs gcc and linux/pps.h")
    source = tmp_path / "layout.c"
    source.write_text(LAYOUT_PROGRAM)
    subprocess.run(["gcc", "-o", str(tmp_path / "layout"), str(source)], check=True,
                   timeout=60)
    out = subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True,
                         check=True, timeout=10).stdout
    theirs = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in out.splitlines()}
    assert theirs == ours()


def test_the_documented_lp64_layout():
    # linux/pps.h on LP64: the times 8-aligned, so pps_kinfo is padded to 48 bytes
    assert ours()["kinfo"] == [48, 0, 4, 8, 24, 40]
    assert ours()["fdata"] == [64, 0, 48]
    assert pps.PPS_FETCH == 0xC00870A4 and pps.PPS_GETCAP == 0x800870A3


# --- a fake /dev/ppsU ---------------------------------------------------------------------


@dataclass
class FakePps:
    """Answers the four ioctls as the kernel's pps core does, on raw struct bytes."""

    caps: int = pps.PPS_CAPTUREASSERT | pps.PPS_CAPTURECLEAR | pps.PPS_OFFSETASSERT \
        | pps.PPS_CANWAIT | pps.PPS_TSFMT_TSPEC
    params: pps.PpsKparams = field(default_factory=pps.PpsKparams)
    info: pps.PpsKinfo = field(default_factory=pps.PpsKinfo)
    calls: list[int] = field(default_factory=list)
    fail: int | None = None  # errno for every call

    def ioctl(self, fd: int, request: int, buf: bytearray) -> int:
        self.calls.append(request)
        if self.fail is not None:
            raise OSError(self.fail, "fake")
        if request == pps.PPS_GETCAP:
            buf[:4] = ctypes.c_int(self.caps).value.to_bytes(4, "little", signed=True)
        elif request == pps.PPS_GETPARAMS:
            buf[:] = bytes(self.params)
        elif request == pps.PPS_SETPARAMS:
            self.params = pps.PpsKparams.from_buffer_copy(bytes(buf))
        elif request == pps.PPS_FETCH:
            data = pps.PpsFdata.from_buffer_copy(bytes(buf))
            assert (data.timeout.sec, data.timeout.nsec) == (0, 0)  # never waits
            data.info = self.info
            buf[:] = bytes(data)
        else:
            raise OSError(25, "ENOTTY")
        return 0

    def pulse(self, sec: int, nsec: int, clear: bool = False) -> None:
        if clear:
            self.info.clear_sequence += 1
            self.info.clear_tu = pps.PpsKtime(sec, nsec, 0)
        else:
            self.info.assert_sequence += 1
            self.info.assert_tu = pps.PpsKtime(sec, nsec, 0)


def device(fake: FakePps, clear: bool = False) -> pps.PpsDevice:
    return pps.PpsDevice("/dev/pps0", clear_edge=clear, ioctl=fake.ioctl, opener=lambda p: -1)


def test_open_asks_capabilities_then_sets_the_assert_edge_in_timespecs():
    fake = FakePps()
    dev = device(fake)
    assert dev.open()
    assert fake.calls == [pps.PPS_GETCAP, pps.PPS_GETPARAMS, pps.PPS_SETPARAMS]
    assert fake.params.api_version == pps.PPS_API_VERS_1
    assert fake.params.mode == pps.PPS_CAPTUREASSERT | pps.PPS_TSFMT_TSPEC


def test_flag2_sets_the_clear_edge_and_fetch_returns_the_clear_timestamp():
    fake = FakePps()
    dev = device(fake, clear=True)
    assert dev.open() and fake.params.mode & pps.PPS_CAPTURECLEAR
    fake.pulse(1_800_000_001, 5, clear=True)
    fake.pulse(1_800_000_009, 7)  # an assert edge: not ours
    assert dev.fetch() == pps.Edge(1, 1_800_000_001, 5, 0)


def test_a_device_that_cannot_capture_the_edge_is_refused_with_the_reason():
    fake = FakePps(caps=pps.PPS_CAPTUREASSERT)
    dev = device(fake, clear=True)
    assert not dev.open()
    assert dev.error == "/dev/pps0: cannot capture the clear edge"


def test_a_failing_ioctl_closes_the_device_with_the_errno_text():
    fake = FakePps()
    dev = device(fake)
    assert dev.open()
    fake.fail = 5
    assert dev.fetch() is None
    assert dev.fd is None and dev.error == "/dev/pps0: Input/output error"


# --- the driver ----------------------------------------------------------------------------


def driver(fake: FakePps, numbered: bool = True, fudge: Fudge | None = None) -> pps.PpsDriver:
    spec = SourceSpec(address="127.127.22.0", port=0, minpoll=4, maxpoll=4)
    peer = RefclockPeer(22, 0, "PPS(0)", b"PPS\0", pps.DESCRIPTION, spec, fudge or Fudge(),
                        precision=pps.PRECISION, sys_precision=-22)
    return pps.PpsDriver(peer, device(fake), lambda: numbered)


def test_a_pulse_is_its_distance_to_the_nearest_second_plus_time1():
    fake = FakePps()
    d = driver(fake, fudge=Fudge(time1=0.000002))
    fake.pulse(1_800_000_000, 999_998_000)  # 2 us early: our clock 2 us fast
    d.timer(NOW + 0.5)
    fake.pulse(1_800_000_002, 1_500)
    d.timer(NOW + 2.5)
    assert [round(r.offset, 9) for r in d.peer.readings] == [round(2e-6 + 2e-6, 9),
                                                            round(-1.5e-6 + 2e-6, 9)]


def test_no_new_sequence_is_no_new_pulse():
    fake = FakePps()
    d = driver(fake)
    fake.pulse(1_800_000_000, 100)
    d.timer(NOW + 0.5)
    d.timer(NOW + 1.5)
    assert len(d.peer.readings) == 1 and d.pulses == 1


def test_without_a_prefer_peer_numbering_the_seconds_pulses_are_dropped_and_counted():
    fake = FakePps()
    d = driver(fake, numbered=False)
    fake.pulse(1_800_000_000, 100)
    d.timer(NOW + 0.5)
    assert d.peer.readings == [] and d.peer.drops == {"no_prefer_peer": 1}


@pytest.mark.parametrize(("sec", "nsec", "flags", "reason"), [
    (0, 0, 0, "bad_time"),
    (1_800_000_000, 1_000_000_000, 0, "bad_time"),
    (1_800_000_000, 100, pps.PPS_TIME_INVALID, "bad_time"),
    (1_799_999_990, 100, 0, "stale"),
])
def test_a_pulse_without_a_usable_time_is_dropped_and_counted(sec, nsec, flags, reason):
    fake = FakePps()
    d = driver(fake)
    fake.info.assert_sequence = 3
    fake.info.assert_tu = pps.PpsKtime(sec, nsec, flags)
    d.timer(NOW + 0.5)
    assert d.peer.readings == [] and d.peer.drops == {reason: 1}


def test_flag4_writes_the_pulse_time_to_clockstats_at_the_poll():
    fake = FakePps()
    d = driver(fake, fudge=Fudge(flags=FLAG4))
    fake.pulse(1_800_000_000, 123)
    d.timer(NOW + 0.5)
    assert d.poll(d.peer) == "1800000000.000000123"
    assert d.poll(d.peer) is None


def _result(prefer: bool, tally: Tally, offset: float, synchronised: bool = True):
    spec = SourceSpec(address="127.127.28.0", port=0, minpoll=4, maxpoll=4, prefer=prefer)
    source = RefclockPeer(28, 0, "SHM(0)", b"GPS\0", "serial time", spec)
    return SimpleNamespace(system=SimpleNamespace(synchronised=synchronised), offset=offset,
                           sources={source: SimpleNamespace(tally=tally)})


@pytest.mark.parametrize(("result", "numbered"), [
    (_result(True, Tally.SYSPEER, 0.01), True),
    (_result(True, Tally.CANDIDATE, -0.39), True),
    (_result(True, Tally.SYSPEER, 0.4), False),  # ntpd: the system offset under 0.4 s
    (_result(False, Tally.SYSPEER, 0.01), False),  # no prefer peer
    (_result(True, Tally.FALSETICKER, 0.01), False),  # the prefer peer did not survive
    (_result(True, Tally.SYSPEER, 0.01, synchronised=False), False),
    (None, False),
])
def test_the_prefer_peer_numbers_the_seconds_only_when_followed_and_within_0_4_s(result,
                                                                                 numbered):
    assert pps.prefer_numbers(result) is numbered


# --- selection: ntpd's PPS peer ----------------------------------------------------------------


def _feed(engine, peers_offsets, polls=40):
    result = None
    for k in range(polls):
        t_poll = NOW + (k + 1) * 16
        for p, offset in peers_offsets:
            for s in range(16):
                t = NOW + k * 16 + s
                p.add(offset, t, t)
            sample = p.take(t_poll)
            assert sample is not None
            engine.on_sample(p, sample)
        result = engine.update(t_poll)
    return result


def _clocks(serial_offset: float):
    from pyntpd.sync.engine import SyncConfig, SyncEngine

    engine = SyncEngine(SyncConfig(discipline=False), NOW)
    serial = RefclockPeer(20, 0, "NMEA(0)", b"GPS\0", "nmea", SourceSpec(
        address="127.127.20.0", port=0, minpoll=4, maxpoll=4, prefer=True), Fudge())
    pulses = RefclockPeer(22, 0, "PPS(0)", b"PPS\0", pps.DESCRIPTION, SourceSpec(
        address="127.127.22.0", port=0, minpoll=4, maxpoll=4, pps=True), Fudge())
    for p in (serial, pulses):
        engine.add_source(p, p.spec)
    return engine, serial, pulses, _feed(engine, [(serial, serial_offset), (pulses, 0.00001)])


def test_a_surviving_pps_clock_is_followed_while_the_prefer_peer_numbers_its_seconds():
    _engine, serial, pulses, result = _clocks(0.002)
    assert result is not None and result.system_peer is pulses
    assert (result.system.stratum, result.system.refid) == (1, b"PPS\0")
    assert result.sources[serial].tally == Tally.CANDIDATE
    assert abs(result.offset - 0.00001) < 1e-6  # the pulses alone, not a combination


def test_without_a_prefer_peer_the_pps_clock_is_not_followed_by_that_rule():
    from pyntpd.sync.engine import SyncConfig, SyncEngine

    engine = SyncEngine(SyncConfig(discipline=False), NOW)
    serial = RefclockPeer(20, 0, "NMEA(0)", b"GPS\0", "nmea", SourceSpec(
        address="127.127.20.0", port=0, minpoll=4, maxpoll=4), Fudge())
    pulses = RefclockPeer(22, 0, "PPS(0)", b"PPS\0", pps.DESCRIPTION, SourceSpec(
        address="127.127.22.0", port=0, minpoll=4, maxpoll=4, pps=True), Fudge())
    for p in (serial, pulses):
        engine.add_source(p, p.spec)
    result = _feed(engine, [(serial, 0.00002), (pulses, 0.00001)])
    assert result is not None
    assert abs(result.offset - 0.00001) > 1e-7  # a combination of both: no PPS peer
