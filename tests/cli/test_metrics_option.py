"""pyntpd --metrics [ADDR:]PORT: loopback unless an address is given; a warning off loopback."""

from __future__ import annotations

import pytest

from pyntpd.cli.options import parse_args


def test_no_metrics_by_default():
    assert parse_args([]).metrics is None


def test_port_alone_listens_on_ipv4_loopback():
    assert parse_args(["--metrics", "9975"]).metrics == ("127.0.0.1", 9975)


def test_ipv6_loopback_in_brackets():
    assert parse_args(["--metrics", "[::1]:9975"]).metrics == ("::1", 9975)


def test_loopback_gives_no_warning():
    assert parse_args(["--metrics", "127.0.0.2:9975"]).warnings == ()


@pytest.mark.parametrize("value", ["0.0.0.0:9975", "[::]:9975", "192.0.2.7:9975"])
def test_non_loopback_address_is_accepted_with_a_warning(value):
    options = parse_args(["--metrics", value])
    assert len(options.warnings) == 1 and "not loopback" in options.warnings[0]


@pytest.mark.parametrize("value", ["", "abc", "localhost:9975", "::1:9975", "[::1]", "1.2.3:99",
                                   "127.0.0.1:", "127.0.0.1:65536", "[fe80::1%eth0]:9975"])
def test_bad_values_are_usage_errors(value, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(["--metrics", value])
    assert info.value.code == 2
    assert "argument --metrics" in capsys.readouterr().err
