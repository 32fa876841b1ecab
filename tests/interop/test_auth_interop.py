"""Symmetric keys with chronyd and ntpsec, both directions: MD5, SHA1, AES-128-CMAC."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import refdaemons
from refdaemons import ChronyClient, ChronyServer, ManagedProcess, NetNamespace
from tests.support import LOCAL_CONF, Pyntpd, config_file

pytestmark = pytest.mark.interop

Require = Callable[..., dict[str, str]]
# (key id, ntpd/pyntpd type, chrony type, secret as hex)
KEYS = [
    (1, "MD5", "MD5", "00112233445566778899aabbccddeeff"),
    (2, "SHA1", "SHA1", "0123456789abcdef0123456789abcdef01234567"),
    (3, "AES128CMAC", "AES128", "2b7e151628aed2a6abf7158809cf4f3c"),
]
IDS = ["MD5", "SHA1", "AES128CMAC"]


@contextmanager
def key_files() -> Iterator[tuple[Path, Path]]:
    """The same keys twice: ntpd's format (pyntpd, ntpsec) and chrony's."""
    with tempfile.TemporaryDirectory(prefix="keys-") as tmp:
        ntp = Path(tmp) / "ntp.keys"
        chrony = Path(tmp) / "chrony.keys"
        # ntpsec's ntpd reads AES keys as type "AES"; pyntpd accepts both names.
        ntp.write_text("".join(f"{i} {'AES' if t == 'AES128CMAC' else t} {s}\n"
                               for i, t, _, s in KEYS))
        chrony.write_text("".join(f"{i} {c} HEX:{s}\n" for i, _, c, s in KEYS))
        for path in (ntp, chrony):
            os.chmod(path, 0o600)
        yield ntp, chrony


def synced_stratum(d: Pyntpd, timeout: float = 40.0) -> int:
    match = d.wait_synced(timeout)
    assert match[1] == "127.0.0.1", match[0]
    return int(match[3])


def chrony_authenticated_requests(server: ChronyServer) -> int:
    """chronyc serverstats: the NTP requests chronyd answered with authentication."""
    for line in server.chronyc("serverstats").splitlines():
        fields = line.split(",")
        # CSV order (chrony 4.3): ntp, nke, cmd, ntp dropped, nke dropped, cmd dropped,
        # log dropped, authenticated ntp, interleaved, timestamps held, span
        if len(fields) >= 8:
            return int(fields[7])
    raise AssertionError(f"unexpected serverstats output from chronyc: {line!r}")


@pytest.mark.parametrize("key_id", [1, 2, 3], ids=IDS)
def test_pyntpd_authenticates_chronyd(require: Require, key_id: int) -> None:
    require("chronyd", "chronyc")
    with key_files() as (ntp_keys, chrony_keys), \
            ChronyServer(stratum=5, lines=[f"keyfile {chrony_keys}"]) as server:
        conf = (f"keys {ntp_keys}\ntrustedkey {key_id}\nrestrict default\n"
                f"server 127.0.0.1 port {server.port} key {key_id} iburst minpoll 4 maxpoll 4\n")
        with config_file(conf) as path, Pyntpd("-c", path) as d:
            assert synced_stratum(d) == 6
        assert chrony_authenticated_requests(server) > 0


@pytest.mark.parametrize("key_id", [1, 2, 3], ids=IDS)
def test_chronyd_authenticates_pyntpd(require: Require, key_id: int) -> None:
    require("chronyd", "chronyc")
    with key_files() as (ntp_keys, chrony_keys), \
            config_file(f"{LOCAL_CONF}keys {ntp_keys}\ntrustedkey 1 2 3\n") as path, \
            Pyntpd("-c", path) as d, \
            ChronyClient([("127.0.0.1", d.port)], server_options=f"key {key_id}",
                         lines=[f"keyfile {chrony_keys}"]) as client:
        source = client.wait_synced(timeout=20.0)
        ntpdata = client.chronyc("ntpdata", "127.0.0.1")
    assert source.stratum == 11
    # chronyc -c ntpdata (4.3): ..., NTP tests, Interleaved, Authenticated, TX/RX stamping, ...
    fields = ntpdata.strip().split(",")
    assert fields[-7] == "Yes", f"chronyd says the replies were not authenticated: {ntpdata}"


def test_chronyd_with_the_wrong_key_gets_nothing_from_pyntpd(require: Require) -> None:
    require("chronyd", "chronyc")
    with key_files() as (ntp_keys, chrony_keys), \
            config_file(f"{LOCAL_CONF}keys {ntp_keys}\ntrustedkey 2 3\n") as path, \
            Pyntpd("-c", path) as d, \
            ChronyClient([("127.0.0.1", d.port)], server_options="key 1",
                         lines=[f"keyfile {chrony_keys}"]) as client, \
            pytest.raises(TimeoutError):
        client.wait_reachable(timeout=3.0)


@pytest.mark.parametrize("key_id", [1, 2, 3], ids=IDS)
def test_pyntpd_authenticates_ntpsec(require: Require, netns: NetNamespace, key_id: int) -> None:
    require("ntpsec-ntpd", "setpriv")
    with key_files() as (ntp_keys, _), tempfile.TemporaryDirectory(prefix="ntpsec-") as tmp:
        work = Path(tmp)
        conf = work / "ntp.conf"
        conf.write_text(f"tos orphan 6 orphanwait 1\nrestrict default\ndisable kernel\n"
                        f"keys {ntp_keys}\ntrustedkey {key_id}\n"
                        f"driftfile {work / 'drift'}\nstatsdir {work}\n")
        ntpsec = ManagedProcess(netns.wrap(refdaemons.ntpsec_ntpd_argv(conf, work / "pid")),
                                work / "ntpd.log")
        client = (f"keys {ntp_keys}\ntrustedkey {key_id}\nrestrict default\n"
                  f"server 127.0.0.1 key {key_id} iburst minpoll 4 maxpoll 4\n")
        with ntpsec, config_file(client) as path, Pyntpd("-c", path, wrap=netns.wrap) as d:
            assert synced_stratum(d, timeout=60.0) == 7


@pytest.mark.parametrize("key_id", [1, 2, 3], ids=IDS)
def test_ntpsec_ntpdig_authenticates_pyntpd(
    require: Require, netns: NetNamespace, key_id: int
) -> None:
    """ntpdig only talks to port 123: pyntpd serves there in the test's namespace."""
    require("ntpdig")
    ntpdig = refdaemons.find_ntpdig()
    assert ntpdig is not None
    with key_files() as (ntp_keys, _), \
            config_file(f"{LOCAL_CONF}keys {ntp_keys}\ntrustedkey 1 2 3\n") as path, \
            Pyntpd("-c", path, port=123, wrap=netns.wrap):
        good = netns.run([ntpdig, "-j", "-t", "2", "-a", str(key_id), "-k", str(ntp_keys),
                          "127.0.0.1"], timeout=20.0)
        other = netns.run([ntpdig, "-j", "-t", "1", "-a", "7", "-k", str(ntp_keys),
                           "127.0.0.1"], timeout=20.0)
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["stratum"] == 11
    # A key pyntpd does not have: no reply at all, so ntpdig times out.
    assert other.returncode != 0
