"""Intersection, clustering, combining and the leap vote on explicit candidates."""

import pytest

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
