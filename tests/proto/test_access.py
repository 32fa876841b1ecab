import ipaddress

import pytest

from pyntpd.proto import access as acc
from pyntpd.proto.access import Access, MruLimits, RateLimits, RestrictTable
from pyntpd.proto.access_types import RestrictFlag as F
from pyntpd.proto.access_types import RestrictRule


def rule(net, flags=F.NONE, default=False):
    return RestrictRule(ipaddress.ip_network(net), flags, is_default=default)


def ip(text):
    a = ipaddress.ip_address(text)
    return int(a), a.version == 6


def flags_of(table, text, port=40000):
    address, v6 = ip(text)
    return table.lookup(address, v6, port)


SEED = RestrictTable([
    rule("0.0.0.0/0", F.KOD | F.NOMODIFY | F.NOTRAP | F.NOPEER | F.NOQUERY, default=True),
    rule("::/0", F.KOD | F.NOMODIFY | F.NOTRAP | F.NOPEER | F.NOQUERY, default=True),
    rule("127.0.0.1/32"),
    rule("::1/128"),
    rule("172.16.0.0/16", F.NOMODIFY | F.NOTRAP),
])


def test_default_rule_applies_to_unknown_ipv4_source():
    assert flags_of(SEED, "192.0.2.1") & F.NOQUERY.value


def test_default_rule_applies_to_unknown_ipv6_source():
    assert flags_of(SEED, "2001:db8::1") & F.NOQUERY.value


def test_host_rule_beats_default():
    assert flags_of(SEED, "127.0.0.1") == 0


def test_network_rule_beats_default():
    assert flags_of(SEED, "172.16.4.5") == (F.NOMODIFY | F.NOTRAP).value


def test_ipv4_rules_do_not_match_ipv6_sources():
    assert flags_of(SEED, "::ffff:172.16.4.5") & F.NOQUERY.value


def test_no_rule_at_all_means_unrestricted():
    assert flags_of(RestrictTable(), "198.51.100.7") == 0


def test_repeated_lines_for_the_same_network_add_their_flags():
    table = RestrictTable([rule("10.0.0.0/8", F.KOD), rule("10.0.0.0/8", F.NOQUERY)])
    assert flags_of(table, "10.1.2.3") == (F.KOD | F.NOQUERY).value


def test_ntpport_rule_matches_only_source_port_123():
    table = RestrictTable([rule("10.0.0.0/8", F.NOQUERY), rule("10.0.0.0/8", F.NTPPORT | F.IGNORE)])
    assert flags_of(table, "10.1.2.3", port=123) & F.IGNORE.value
    assert flags_of(table, "10.1.2.3", port=50000) == F.NOQUERY.value


def masked(address, mask, flags=F.NONE):
    base = ipaddress.ip_address(int(ipaddress.ip_address(address)) & mask)
    return RestrictRule(ipaddress.ip_network(f"{base}/32"), flags, mask=mask)


def test_non_contiguous_mask_matches_the_bits_under_the_mask():
    """ntpd takes any mask: `restrict 10.0.0.5 mask 255.0.0.255` is every 10.x.y.5."""
    table = RestrictTable([rule("0.0.0.0/0", F.NOQUERY, default=True),
                           masked("10.0.0.5", 0xFF0000FF, F.IGNORE)])
    assert flags_of(table, "10.7.9.5") == F.IGNORE.value
    assert flags_of(table, "10.7.9.6") == F.NOQUERY.value


def test_with_a_non_contiguous_mask_rules_keep_ntpds_order():
    """ntpd sorts entries by address, then mask, descending, and the first match wins: for
    prefix masks that is the longest match, which a masked rule does not disturb."""
    table = RestrictTable([
        rule("0.0.0.0/0", F.NOQUERY, default=True),
        rule("10.0.0.0/8", F.KOD),
        rule("10.1.0.0/16", F.LIMITED),
        rule("10.1.2.3/32", F.NOPEER),
        masked("10.0.0.5", 0xFF0000FF, F.IGNORE),
    ])
    assert flags_of(table, "10.1.2.3") == F.NOPEER.value
    assert flags_of(table, "10.1.9.9") == F.LIMITED.value
    assert flags_of(table, "10.2.2.2") == F.KOD.value
    assert flags_of(table, "10.1.0.5") == F.LIMITED.value  # 10.1.0.0 sorts above 10.0.0.5
    assert flags_of(table, "10.2.0.5") == F.IGNORE.value
    assert flags_of(table, "192.0.2.1") == F.NOQUERY.value


def test_restrict_source_is_a_template_not_a_match():
    table = RestrictTable([RestrictRule(None, F.NOQUERY)])
    assert flags_of(table, "10.1.2.3") == 0 and table.source_template == F.NOQUERY.value


def test_with_hosts_adds_host_rules_from_the_source_template():
    table = RestrictTable([rule("0.0.0.0/0", F.IGNORE)]).with_hosts([ip("192.0.2.9")], 0)
    assert flags_of(table, "192.0.2.9") == 0 and flags_of(table, "192.0.2.8") & F.IGNORE.value


def test_access_cache_follows_a_replaced_table():
    a = Access(RestrictTable([rule("0.0.0.0/0", F.IGNORE)]))
    address, v6 = ip("192.0.2.1")
    assert a.flags_for(address, v6, 1) & acc.IGNORE
    a.replace_table(RestrictTable())
    assert a.flags_for(address, v6, 1) == 0


# ntpd's leaky bucket with discard average 3 (8 s) and minimum 2 s.
def limited_access(**mru):
    return Access(RestrictTable([rule("0.0.0.0/0", F.LIMITED | F.KOD)]), RateLimits(3, 2.0),
                  MruLimits(**mru) if mru else None)


def test_first_packet_from_a_source_is_never_over_rate():
    a = limited_access()
    assert not a.check(1, False, 5000, 100.0) & acc.OVER_RATE


def test_client_polling_every_64s_is_never_over_rate():
    a = limited_access()
    assert not any(a.check(1, False, 5000, 64.0 * i) & acc.OVER_RATE for i in range(50))


def test_packets_closer_than_minimum_are_over_rate():
    a = limited_access()
    a.check(1, False, 5000, 100.0)
    assert a.check(1, False, 5000, 100.5) & acc.OVER_RATE


def test_sustained_8s_headway_is_within_average():
    a = limited_access()
    assert not any(a.check(1, False, 5000, 8.0 * i) & acc.OVER_RATE for i in range(100))


def test_sustained_2s_headway_exceeds_average_eventually():
    a = limited_access()
    results = [a.check(1, False, 5000, 2.0 * i) & acc.OVER_RATE for i in range(100)]
    assert not results[0] and any(results)


def test_only_the_first_excess_packet_of_a_burst_may_get_a_kod():
    a = limited_access()
    flags = [a.check(1, False, 5000, 100.0 + 0.01 * i) for i in range(20)]
    allowed = [f & acc.KOD_ALLOWED for f in flags]
    assert allowed[1] and not any(allowed[2:])


def test_source_recovers_after_quiet_period():
    a = limited_access()
    for i in range(20):
        a.check(1, False, 5000, 100.0 + 0.01 * i)
    assert not a.check(1, False, 5000, 1000.0) & acc.OVER_RATE


def test_mru_never_exceeds_its_bound_under_a_flood_of_sources():
    a = limited_access(max_entries=1000, min_depth=10, max_age=64.0)
    for source in range(200_000):
        a.check(source, False, 5000, 100.0)
    assert len(a.mru) == 1000 and a.recycled == 199_000


def test_mru_recycles_the_least_recently_seen_source():
    a = limited_access(max_entries=2, min_depth=1, max_age=1e9)
    a.check(1, False, 1, 1.0)
    a.check(2, False, 1, 2.0)
    a.check(1, False, 1, 3.0)
    a.check(3, False, 1, 4.0)
    assert set(a.mru) == {1, 3}


def test_mru_recycles_stale_entries_beyond_min_depth():
    a = limited_access(max_entries=100, min_depth=2, max_age=10.0)
    for source in range(5):
        a.check(source, False, 1, 0.0)
    a.check(99, False, 1, 100.0)
    assert len(a.mru) == 5 and 0 not in a.mru


def test_ignored_sources_are_not_accounted():
    a = Access(RestrictTable([rule("0.0.0.0/0", F.IGNORE)]))
    a.check(1, False, 1, 1.0)
    assert len(a.mru) == 0


def test_entries_lists_most_recent_first():
    a = limited_access()
    a.check(1, False, 1, 1.0)
    a.check(2, False, 1, 2.0)
    assert [k for k, _ in a.entries()] == [2, 1]


def walk_from_oldest(a):
    keys, entry = [], a.oldest()
    while entry is not None:
        keys.append(entry.key)
        entry = a.newer(entry)
    return keys


def test_the_mru_list_reads_oldest_to_newest_with_a_source_seen_again_moved_to_the_end():
    a = limited_access()
    for source, now in ((1, 1.0), (2, 2.0), (3, 3.0), (1, 4.0)):
        a.check(source, False, 1, now)
    assert walk_from_oldest(a) == [2, 3, 1]
    assert a.newest().key == 1 and a.older(a.newest()).key == 3


def test_the_mru_list_resumes_after_an_entry_without_walking_from_an_end():
    a = limited_access()
    for source in range(10):
        a.check(source, False, 1, float(source))
    entry = a.mru[6]
    assert [a.newer(entry).key, a.newer(a.newer(entry)).key] == [7, 8]
    assert a.newer(a.mru[9]) is None and a.older(a.mru[0]) is None


def test_a_recycled_entry_leaves_the_list():
    a = limited_access(max_entries=3, min_depth=1, max_age=1e9)
    for source in range(5):
        a.check(source, False, 1, float(source))
    assert walk_from_oldest(a) == [2, 3, 4] and set(a.mru) == {2, 3, 4}


def test_mru_limits_from_maxmem():
    assert MruLimits.from_maxmem(1024).max_entries == 1024 * 1024 // acc.MRU_ENTRY_BYTES


@pytest.mark.parametrize("clock_jump", [-5.0, -1e6])
def test_clock_going_backwards_never_credits_a_source(clock_jump):
    a = limited_access()
    a.check(1, False, 1, 100.0)
    assert a.check(1, False, 1, 100.0 + clock_jump) & acc.OVER_RATE
