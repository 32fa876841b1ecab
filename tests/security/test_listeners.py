"""Every listener obeys `interface` and `restrict` (issue 12, item 3), on real daemons.

The finding: with `interface ignore wildcard`, `interface listen 127.0.0.1` and `restrict
default ignore`, NTP bound per address but NTS-KE listened on 0.0.0.0 and ::, a client at an
ignored address got 8 cookies, and `--check` said nothing. The sockets are read from the
kernel's tables (/proc/net), not from the daemon's log.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.harness import poll_until
from tests.integration.test_nts import nts_server
from tests.security.test_ntske_abuse import cookies_for, nts_ke
from tests.support import LOCAL_CONF, config_file

RULES = "interface ignore wildcard\ninterface listen 127.0.0.1\n"
RESTRICT = "restrict default ignore\nrestrict 127.0.0.1\nrestrict ::1\n"
WILDCARDS = {"0.0.0.0", "::"}


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # IPv6: four 32-bit words, each in host (little-endian) order
    return str(ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))


def bound(kind: str, port: int, listening_only: bool = False) -> set[str]:
    """The local addresses of the kernel's `kind` (tcp/udp) sockets on `port`."""
    found = set()
    for table in (f"/proc/net/{kind}", f"/proc/net/{kind}6"):
        with open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                address, _, hex_port = fields[1].partition(":")
                if int(hex_port, 16) == port and (not listening_only or fields[3] == "0A"):
                    found.add(_address(address))
    return found


def test_nts_ke_listens_where_the_interface_rules_let_ntp_listen(tmp_path: Path) -> None:
    with nts_server(tmp_path, listen=None, extra=RULES + RESTRICT) as (d, ke_port, pki):
        ntp = bound("udp", d.port)
        ke = bound("tcp", ke_port, listening_only=True)
        assert "127.0.0.1" in ke and not ke & WILDCARDS
        assert ke == ntp
        # 127.0.0.2 is this host too (all of 127/8 is loopback), but no rule lets us listen
        # there: only a wildcard socket would answer.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", ke_port), timeout=5.0).close()
        assert cookies_for(ke_port, pki, "127.0.0.1") == 8


def test_restrict_ignore_and_noserve_refuse_nts_ke_connections_and_count_them(
        tmp_path: Path) -> None:
    extra = RULES + RESTRICT + "restrict 127.0.0.4 noserve\n"
    with nts_server(tmp_path, listen=None, extra=extra, status=True) as (d, ke_port, pki):
        assert cookies_for(ke_port, pki, "127.0.0.3") == 0  # default ignore
        assert cookies_for(ke_port, pki, "127.0.0.4") == 0  # noserve
        assert cookies_for(ke_port, pki, "127.0.0.1") == 8
        counters = poll_until(lambda: (c := nts_ke(d)).get("served") == 1 and c, 5.0, "counts")
        assert isinstance(counters, dict)
        assert counters["refused_restrict"] == 2 and counters["accepted"] == 3


def test_a_restrict_change_on_sighup_reaches_nts_ke(tmp_path: Path) -> None:
    """The helper process applies the table the main process has, after every reload."""
    with nts_server(tmp_path, extra=RESTRICT) as (d, ke_port, pki):
        assert cookies_for(ke_port, pki, "127.0.0.3") == 0
        conf = Path(d.args[d.args.index("-c") + 1])
        conf.write_text(conf.read_text() + "restrict 127.0.0.3\n")
        d.signal(signal.SIGHUP)
        d.wait_for_log("configuration reloaded")
        poll_until(lambda: cookies_for(ke_port, pki, "127.0.0.3") == 8, 5.0,
                   "served after the reload")


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyntpd.cli.pyntpd", "--check", *args],
                          capture_output=True, text=True, timeout=30)


def test_check_states_every_address_and_port_pyntpd_will_listen_on(tmp_path: Path) -> None:
    conf = (f"{LOCAL_CONF}interface ignore all\ninterface listen 127.0.0.1\n{RESTRICT}"
            "nts enable cert /etc/hostname key /etc/hostname port 4461\n")
    status = tmp_path / "status.sock"
    with config_file(conf) as path:
        result = check("-c", path, "--port", "1123", "--metrics", "9123",
                       "--status-socket", str(status))
    listening = [line for line in result.stdout.splitlines() if line.startswith("listening:")]
    assert listening == [
        "listening: NTP: UDP 127.0.0.1 port 1123",
        "listening: NTS-KE: TCP 127.0.0.1 port 4461",
        "listening: metrics (--metrics): TCP 127.0.0.1 port 9123",
        f"listening: JSON status (--status-socket): Unix socket {status}",
    ], result.stdout
    assert result.returncode == 0


def test_check_names_the_one_address_nts_listen_gives(tmp_path: Path) -> None:
    conf = f"{LOCAL_CONF}nts enable cert /etc/hostname key /etc/hostname listen ::1\n"
    with config_file(conf) as path:
        result = check("-c", path, "-4")
    ke = [line for line in result.stdout.splitlines()
          if line.startswith("listening: NTS-KE")]
    assert ke == ["listening: NTS-KE: TCP [::1] port 4460"]
    assert "listening: NTP: UDP 0.0.0.0 port 123" in result.stdout


def test_check_says_when_the_interface_rules_leave_nothing(tmp_path: Path) -> None:
    with config_file(f"{LOCAL_CONF}interface ignore all\n") as path:
        result = check("-c", path)
    assert "listening: nothing: the interface rules (interface/-I) leave no address" \
        in result.stdout
    assert result.returncode == 1
