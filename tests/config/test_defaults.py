from __future__ import annotations

import ipaddress

from pyntpd.config import DEFAULT_CONFIG_TEXT, LocalClock, load_default, parse_text
from pyntpd.proto.access_types import RestrictFlag, RestrictRule

from .helpers import messages, parse

F = RestrictFlag


def test_default_text_parses_without_diagnostics():
    result = parse(DEFAULT_CONFIG_TEXT, "<default>")
    assert not result.diagnostics, messages(result)


def test_load_default_equals_parsing_the_text():
    assert load_default() == parse(DEFAULT_CONFIG_TEXT, "<default>").config


def test_load_default_needs_no_dns_or_files():
    assert load_default().servers[0].address == "pool.ntp.org"


def test_default_uses_the_pool_with_iburst():
    (pool,) = load_default().servers
    assert (pool.kind, pool.address, pool.iburst) == ("pool", "pool.ntp.org", True)


def test_default_has_the_local_clock_at_stratum_10():
    assert load_default().local_clocks == (LocalClock(unit=0, stratum=10),)


def test_default_restrictions():
    net = ipaddress.ip_network
    default = F.KOD | F.LIMITED | F.NOMODIFY | F.NOTRAP | F.NOPEER | F.NOQUERY
    assert load_default().restrictions == (
        RestrictRule(net("0.0.0.0/0"), default, is_default=True),
        RestrictRule(net("::/0"), default, is_default=True),
        RestrictRule(net("127.0.0.1/32"), F.NONE),
        RestrictRule(net("::1/128"), F.NONE),
        RestrictRule(None, F.NOMODIFY | F.NOTRAP | F.NOQUERY | F.SOURCE),
    )


def test_default_driftfile():
    assert load_default().driftfile == "/var/lib/pyntpd/drift"


def test_default_text_with_default_resolver_and_reader_also_parses():
    # As the daemon does it: no restrict host names, no includes, so nothing is looked up.
    assert not parse_text(DEFAULT_CONFIG_TEXT, "<builtin>").diagnostics
