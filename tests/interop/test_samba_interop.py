"""MS-SNTP against Samba's real ntp_signd: pyntpd as a Samba AD domain controller's NTP server.

A throwaway domain (tests/interop/sambadc.py) with machine accounts; pyntpd is configured as
Samba documents it for ntpd (`ntpsigndsocket DIR`, `restrict ... mssntp`); the test plays a
domain member's w32time: an NTPv3 request whose Authenticator is the account's RID and a
zero checksum. The reply must be signed as [MS-SNTP] 3.2.5 says: MD5 over the account's NT
hash (read from the directory, not from Samba's answer) and the 48-byte reply.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import refdaemons
from refdaemons import NetNamespace, free_tcp_port, poll_until
from sambadc import MachineAccount, SambaDC
from tests.support import Pyntpd, config_file

from pyntpd.proto.packet import HEADER, decode, li_vn_mode

pytestmark = pytest.mark.interop

SIGNER = "127.0.0.2"  # a domain member the restrict rules allow MS-SNTP for
OUTSIDER = "127.0.0.3"  # one they do not
CLIENT_TRANSMIT = 0x0E1D2C3B4A596877
NO_REPLY_WAIT = 1.5  # s; Samba signs in about a millisecond, pyntpd gives up after 1 s


@dataclass(frozen=True)
class Domain:
    dc: SambaDC
    member: MachineAccount
    disabled: MachineAccount
    user_rid: int


@pytest.fixture(scope="module")
def domain() -> Iterator[Domain]:
    tools = refdaemons.require("samba", "samba-tool", "netns")
    with tempfile.TemporaryDirectory(prefix="samba-dc-") as tmp, NetNamespace() as ns, \
            SambaDC(tools["samba"], tools["samba-tool"], ns, Path(tmp)) as dc:
        dc.provision()
        member = dc.add_computer("WIN1", "W1n-Mach1ne-Pw!")
        disabled = dc.add_computer("WIN2", "W2n-Mach1ne-Pw!", disabled=True)
        user_rid = dc.add_user("alice", "Al1ce-Pass!23")
        dc.start()
        yield Domain(dc, member, disabled, user_rid)


@pytest.fixture
def pyntpd(domain: Domain) -> Iterator[tuple[Pyntpd, int]]:
    """pyntpd with Samba's recommended restrict line, and its metrics port."""
    conf = f"""\
server 127.127.1.0
fudge 127.127.1.0 stratum 10
ntpsigndsocket {domain.dc.signd_dir}/
restrict default kod limited nomodify notrap nopeer noquery mssntp
restrict {SIGNER} kod nomodify notrap nopeer noquery mssntp
restrict {OUTSIDER} kod nomodify notrap nopeer noquery
"""
    metrics = free_tcp_port()
    with config_file(conf) as path, Pyntpd("-c", path, "--metrics", str(metrics)) as daemon:
        yield daemon, metrics


def w32time_request(key_id: bytes) -> bytes:
    """What a domain member sends: NTPv3, client mode, the Authenticator with a zero
    checksum ([MS-SNTP] 2.2.1)."""
    return HEADER.pack(li_vn_mode(0, 3, 3), 0, 10, -23, 0, 0, b"\0" * 4, 0, 0, 0,
                       CLIENT_TRANSMIT) + key_id + bytes(16)


def ask(port: int, data: bytes, source: str = SIGNER,
        timeout: float = NO_REPLY_WAIT) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recv(512)
        except TimeoutError:
            return None


def mssntp_failed(metrics: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/status", timeout=5) as reply:
        server = json.load(reply)["server"]
    return {k: n for k, n in server["mssntp_failed"].items() if n}


def assert_signed_for(reply: bytes | None, account: MachineAccount, key_id: bytes) -> None:
    assert reply is not None, "no signed reply"
    assert len(reply) == 68, "a signed reply is as long as the request"
    packet, sent_key, checksum = reply[:48], reply[48:52], reply[52:]
    assert sent_key == key_id
    assert checksum == hashlib.md5(account.nt_hash + packet, usedforsecurity=False).digest()
    header = decode(packet).header
    assert (header.mode, header.version, header.origin) == (4, 3, CLIENT_TRANSMIT)


def test_samba_signs_the_reply_with_the_machine_accounts_nt_hash(domain, pyntpd):
    daemon, metrics = pyntpd
    reply = ask(daemon.port, w32time_request(domain.member.key_id), timeout=5.0)
    assert_signed_for(reply, domain.member, domain.member.key_id)
    assert mssntp_failed(metrics) == {}


def test_the_key_selector_bit_goes_to_samba_and_back_as_sent(domain, pyntpd):
    daemon, _ = pyntpd
    key_id = struct.pack("<I", domain.member.rid | 0x80000000)
    assert_signed_for(ask(daemon.port, w32time_request(key_id), timeout=5.0),
                      domain.member, key_id)


def test_an_unknown_rid_gets_no_reply_and_counts_as_refused(domain, pyntpd):
    daemon, metrics = pyntpd
    assert ask(daemon.port, w32time_request(struct.pack("<I", 999_999))) is None
    assert mssntp_failed(metrics) == {"signd_refused": 1}


def test_a_disabled_account_gets_no_reply_and_the_next_request_is_signed(domain, pyntpd):
    # Samba closes the connection for it; pyntpd reconnects for the next request.
    daemon, metrics = pyntpd
    assert ask(daemon.port, w32time_request(domain.disabled.key_id)) is None
    assert mssntp_failed(metrics) == {"signd_closed": 1}
    reply = ask(daemon.port, w32time_request(domain.member.key_id), timeout=5.0)
    assert_signed_for(reply, domain.member, domain.member.key_id)


def test_a_user_account_is_not_a_trust_account_and_is_not_signed(domain, pyntpd):
    daemon, metrics = pyntpd
    assert ask(daemon.port, w32time_request(struct.pack("<I", domain.user_rid))) is None
    assert mssntp_failed(metrics) == {"signd_closed": 1}


def test_a_source_whose_rule_lacks_mssntp_gets_no_reply(domain, pyntpd):
    daemon, metrics = pyntpd
    request = w32time_request(domain.member.key_id)
    assert ask(daemon.port, request, source=OUTSIDER) is None
    assert mssntp_failed(metrics) == {"not_permitted": 1}


def test_while_ntp_signd_is_down_requests_are_refused_and_served_again_after_it_returns(
        domain, pyntpd):
    # Last in this module: it restarts the domain controller.
    daemon, metrics = pyntpd
    request = w32time_request(domain.member.key_id)
    assert_signed_for(ask(daemon.port, request, timeout=5.0), domain.member,
                      domain.member.key_id)
    domain.dc.stop()
    assert ask(daemon.port, request) is None
    assert "signd_unavailable" in mssntp_failed(metrics)
    domain.dc.start()
    # pyntpd retries after its back-off (0.5 s, doubling): ask until a signed reply comes.
    reply = poll_until(lambda: ask(daemon.port, request, timeout=0.5), 20.0,
                       "a signed reply after ntp_signd came back", interval=0.2)
    assert_signed_for(reply, domain.member, domain.member.key_id)
