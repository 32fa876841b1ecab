"""The mode 6 variables ntpq asks for by name (sysinfo, sysstats, monstats, authinfo,
iostats), from the daemon's own counters."""

from __future__ import annotations

from pyntpd.daemon import mode6vars
from pyntpd.proto.access import Access, MruLimits, RestrictTable
from pyntpd.proto.auth import KeyRing
from pyntpd.proto.control import PeerInfo
from pyntpd.proto.packet import DropReason
from pyntpd.proto.server import ServerCounters


def test_sysinfo_names_the_system_peer_its_mode_and_the_root_distance() -> None:
    peer = PeerInfo(associd=4, srcadr="2001:db8::1", srcport=123, hmode=1)
    v = mode6vars.system_peer(peer, rootdelay=0.010, rootdisp=0.002)
    assert v == {"peeradr": "[2001:db8::1]:123", "peermode": "1", "rootdist": "7.000",
                 "authdelay": "0.000"}


def test_sysinfo_without_a_system_peer_says_what_ntpd_says() -> None:
    v = mode6vars.system_peer(None, 0.0, 0.0)
    assert v["peeradr"] == "0.0.0.0:0" and v["peermode"] == "0"


def test_sysstats_sums_the_drop_reasons_into_ntpds_categories() -> None:
    c = ServerCounters(received=100, served=80)
    for reason, n in ((DropReason.TOO_SHORT, 2), (DropReason.BAD_VERSION, 1),
                      (DropReason.BAD_AUTH, 3), (DropReason.AUTH_REQUIRED, 1),
                      (DropReason.RESTRICTED, 4), (DropReason.CONTROL_DENIED, 1),
                      (DropReason.MODE7, 5), (DropReason.RATE_LIMITED, 6)):
        c.dropped[reason] = n
    c.kod_sent[b"RATE"] = 2
    v = mode6vars.sysstats(c, control_requests=9, uptime=61.7)
    assert v == {"ss_uptime": "61", "ss_reset": "61", "ss_numctlreq": "9", "ss_received": "100",
                 "ss_badformat": "3", "ss_badauth": "4", "ss_declined": "5",
                 "ss_restricted": "5", "ss_limited": "6", "ss_kodsent": "2",
                 "ss_processed": "80"}


def test_monstats_reports_the_mru_lists_depth_and_limits() -> None:
    access = Access(RestrictTable([]), mru=MruLimits(max_entries=100, min_depth=10,
                                                        max_age=64.0))
    access.check(0xC0000201, False, 123, 1000.0, 3)
    v = mode6vars.monstats(access, 1030.0)
    assert v["mru_depth"] == "1" and v["mru_maxdepth"] == "100"
    assert v["mru_mindepth"] == "10" and v["mru_oldest_age"] == "30"


def test_monstats_oldest_age_is_the_least_recently_heard_source() -> None:
    # The first source heard again later is no longer the oldest entry of the list.
    access = Access(RestrictTable([]))
    access.check(0xC0000201, False, 123, 1000.0, 3)
    access.check(0xC0000202, False, 123, 1010.0, 3)
    access.check(0xC0000201, False, 123, 1020.0, 3)
    assert mode6vars.monstats(access, 1030.0)["mru_oldest_age"] == "20"


def test_each_group_lists_exactly_the_variables_it_computes() -> None:
    # The daemon computes a group only when a request names one of the group's variables.
    access = Access(RestrictTable([]))
    access.check(0xC0000201, False, 123, 1000.0, 3)
    c = ServerCounters()
    assert set(mode6vars.system_peer(None, 0.0, 0.0)) == mode6vars.SYSINFO
    assert set(mode6vars.sysstats(c, 0, 1.0)) == mode6vars.SYSSTATS
    assert set(mode6vars.monstats(access, 1001.0)) == mode6vars.MONSTATS
    assert set(mode6vars.authinfo(KeyRing(), 1.0)) == mode6vars.AUTHINFO
    assert set(mode6vars.iostats(c, 1.0)) == mode6vars.IOSTATS


def test_authinfo_counts_the_keys_loaded() -> None:
    assert mode6vars.authinfo(KeyRing(), 5.0) == {"authreset": "5", "authkeys": "0"}
