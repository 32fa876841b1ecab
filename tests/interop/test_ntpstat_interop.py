"""Debian's ntpstat against pyntpd: its 576-byte, version 2, zero-padded READVAR is answered.

ntpstat only talks to 127.0.0.1:123, so pyntpd runs in a network namespace of its own. Its exit
codes: 0 synchronised, 1 unsynchronised, 2 no answer (it could not tell).
"""

from __future__ import annotations

from collections.abc import Callable

from refdaemons import NetNamespace
from tests.support import Pyntpd, config_file

Require = Callable[..., dict[str, str]]


def ntpstat(netns: NetNamespace, path: str) -> tuple[int, str]:
    result = netns.run([path], timeout=30)
    return result.returncode, result.stdout


def test_ntpstat_says_synchronised_with_exit_0(require: Require, netns: NetNamespace) -> None:
    path = require("ntpstat")["ntpstat"]
    with config_file("server 127.127.1.0\nfudge 127.127.1.0 stratum 10\n") as conf, \
            Pyntpd("-c", conf, port=123, wrap=netns.wrap):
        code, out = ntpstat(netns, path)
    assert code == 0, out
    assert "synchronised to local net at stratum 11" in out


def test_ntpstat_says_unsynchronised_with_exit_1(require: Require, netns: NetNamespace) -> None:
    path = require("ntpstat")["ntpstat"]
    # A server nobody runs: pyntpd answers, unsynchronised (leap 11).
    with config_file("server 127.0.0.1 port 10123\n") as conf, \
            Pyntpd("-c", conf, port=123, wrap=netns.wrap):
        code, out = ntpstat(netns, path)
    assert code == 1, out
    assert out.startswith("unsynchronised")


def test_ntpstat_refused_by_noquery_cannot_tell_with_exit_2(require: Require,
                                                            netns: NetNamespace) -> None:
    path = require("ntpstat")["ntpstat"]
    with config_file("server 127.127.1.0\nrestrict default noquery\n") as conf, \
            Pyntpd("-c", conf, port=123, wrap=netns.wrap):
        code, _ = ntpstat(netns, path)
    assert code == 2
