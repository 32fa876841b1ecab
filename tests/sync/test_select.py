"""Intersection, clustering, combining and the leap vote on explicit candidates."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyntpd.sync.select import Candidate, cluster, combine, intersect


def cand(key, offset, distance=0.002, jitter=1e-4, **kw):
    return Candidate(key, offset, 0.0, 1e-10, distance, jitter, distance, **kw)


def test_falseticker_marked_among_three_honest():
    cs = [cand("a", 0.0), cand("b", 0.0005), cand("c", -0.0004), cand("liar", 0.050)]
    result = intersect(cs)
    assert [c.key for c in result.falsetickers] == ["liar"]
    assert {c.key for c in result.truechimers} == {"a", "b", "c"}
    assert result.low <= 0.0 <= result.high


def test_no_majority_no_truechimers():
    cs = [cand("a", 0.0), cand("b", 0.0001), cand("c", 1.0), cand("d", 1.0001)]
    result = intersect(cs)
    assert result.truechimers == ()


def test_majority_rules_over_a_minority_clique():
    cs = [cand("a", 0.0), cand("b", 0.0001), cand("c", 0.0002), cand("x", 1.0),
          cand("y", 1.0001)]
    assert {c.key for c in intersect(cs).falsetickers} == {"x", "y"}


def test_true_source_always_survives():
    cs = [cand("a", 0.0), cand("b", 0.0001), cand("c", 0.0002), cand("t", 1.0, true=True)]
    result = intersect(cs)
    assert "t" in {c.key for c in result.truechimers}
    assert result.falsetickers == ()


def test_single_source_is_its_own_truechimer():
    assert [c.key for c in intersect([cand("a", 0.3)]).truechimers] == ["a"]


def test_cluster_drops_the_most_discordant_down_to_minclock():
    cs = [cand("a", 0.0, jitter=1e-5), cand("b", 1e-5, jitter=1e-5),
          cand("c", -1e-5, jitter=1e-5), cand("d", 0.0015, jitter=1e-5)]
    kept, outliers = cluster(cs, minclock=3)
    assert [c.key for c in outliers] == ["d"]
    assert len(kept) == 3


def test_cluster_never_drops_the_prefer_source():
    cs = [cand("a", 0.0, jitter=1e-5), cand("b", 1e-5, jitter=1e-5),
          cand("p", 0.0015, jitter=1e-5, prefer=True)]
    kept, _ = cluster(cs, minclock=1)
    assert "p" in {c.key for c in kept}


def test_combine_weights_by_path_distance_and_variance():
    near, far = cand("near", 0.0, distance=0.001), cand("far", 0.003, distance=0.003)
    # weights ~ 1/distance^2: 9 to 1
    assert combine([near, far]).offset == pytest.approx(0.0003, rel=1e-3)
    noisy = Candidate("noisy", 0.001, 0.0, 1e-6, 0.001, 1e-4, 0.0)
    quiet = Candidate("quiet", 0.0, 0.0, 1e-12, 0.001, 1e-4, 0.0)
    assert combine([noisy, quiet]).offset == pytest.approx(0.0, abs=1e-8)


# --- asymmetric paths (issue 10 item 1) ---------------------------------------------------

def honest(key, forward, backward, root_dispersion=1e-5, mindist=0.001):
    """A server whose clock is exactly right, `forward`/`backward` s away each way: what
    the client measures (offset = (forward - backward) / 2, half the round trip plus the
    root dispersion as the interval's half-width)."""
    offset = (forward - backward) / 2
    distance = max(mindist, (forward + backward) / 2 + root_dispersion)
    return Candidate(key, offset, 0.0, 1e-12, distance, 1e-5, distance)


def test_issue_figures_two_honest_servers_one_path_5ms_asymmetric_are_both_truechimers():
    # pyntpd measured -2.485 ms (delay 5.137 ms, root dispersion 0.488 ms) and +0.011 ms
    # (delay 0.176 ms): the first's offset lies outside the intervals' overlap.
    far = Candidate("far", -2.485e-3, 0.0, 1e-12, 5.137e-3 / 2 + 0.488e-3, 1e-5, 0.0)
    near = Candidate("near", 0.011e-3, 0.0, 1e-12, max(0.001, 0.176e-3 / 2 + 1e-5), 1e-5, 0.0)
    result = intersect([far, near])
    assert {c.key for c in result.truechimers} == {"far", "near"}
    assert result.falsetickers == ()
    assert result.low == pytest.approx(0.011e-3 - 0.001)
    assert result.high == pytest.approx(-2.485e-3 + 5.137e-3 / 2 + 0.488e-3)
    assert not result.low <= far.offset <= result.high  # the RFC appendix's midpoint rule


def test_a_candidate_whose_offset_misses_the_intersection_but_whose_interval_reaches_it():
    cs = [cand("a", 0.0, distance=0.001), cand("b", 0.0005, distance=0.001),
          cand("c", 0.0025, distance=0.002)]  # c's interval [0.0005, 0.0045] reaches it
    result = intersect(cs)
    assert result.falsetickers == ()
    assert (result.low, result.high) == pytest.approx((0.0005, 0.001))


def test_intervals_that_only_touch_share_that_point():
    result = intersect([cand("a", 0.0, distance=0.001), cand("b", 0.002, distance=0.001)])
    assert {c.key for c in result.truechimers} == {"a", "b"}
    assert result.low == result.high == pytest.approx(0.001)


paths = st.tuples(st.floats(1e-5, 0.2), st.floats(0.0, 1.0), st.booleans())


def path_server(key, path):
    """A path of round trip `rtt`, the share `skew` of it in one direction (0 or 1: the
    whole delay one way)."""
    rtt, skew, forward_long = path
    long, short = rtt * max(skew, 1 - skew), rtt * min(skew, 1 - skew)
    return honest(key, *((long, short) if forward_long else (short, long)))


@given(st.lists(paths, min_size=2, max_size=4))
def test_honest_servers_survive_any_asymmetry_up_to_the_whole_delay(servers):
    cs = [path_server(f"s{i}", p) for i, p in enumerate(servers)]
    result = intersect(cs)
    assert len(result.truechimers) == len(cs)
    assert result.low <= 0.0 <= result.high  # the true time is in the intersection


@given(st.lists(paths, min_size=1, max_size=3), st.floats(0.0, 0.1),
       st.floats(1e-4, 0.01), st.booleans())
def test_a_liar_beyond_every_honest_interval_is_still_a_falseticker(servers, margin, width,
                                                                    ahead):
    cs = [path_server(f"s{i}", p) for i, p in enumerate(servers)]
    # The liar's interval starts `margin` beyond the farthest honest interval's edge.
    if ahead:
        edge = max(c.offset + c.root_distance for c in cs) + margin + 1e-9
        liar = cand("liar", edge + width, distance=width)
    else:
        edge = min(c.offset - c.root_distance for c in cs) - margin - 1e-9
        liar = cand("liar", edge - width, distance=width)
    result = intersect([*cs, liar])
    if len(cs) == 1:  # one against one: no majority, nobody is followed
        assert result.truechimers == ()
    else:
        assert [c.key for c in result.falsetickers] == ["liar"]
        assert len(result.truechimers) == len(cs)
