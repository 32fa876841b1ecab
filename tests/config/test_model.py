from __future__ import annotations

import dataclasses

import pytest

from pyntpd.config import NtpConfig, ServerConfig
from pyntpd.config.diagnostics import Location

from .helpers import parse


def test_config_is_frozen():
    config = NtpConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.driftfile = "/tmp/x"  # type: ignore[misc]


def test_config_collections_are_tuples_and_frozensets():
    config = parse("server a.example\nrestrict default\nstatistics loopstats").config
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        assert not isinstance(value, list | dict | set), field.name


def test_config_is_hashable():
    assert hash(parse("server a.example\ntrustedkey 1").config) is not None


def test_equality_ignores_source_locations():
    a = ServerConfig("server", "a.example", location=Location("x", 1, 1))
    b = ServerConfig("server", "a.example", location=Location("y", 9, 9))
    assert a == b


def test_same_settings_in_different_layout_are_equal():
    plain = parse("server a.example iburst").config
    assert plain == parse("\n\n  server  a.example  iburst # c").config


def test_empty_config_has_no_sources():
    config = NtpConfig()
    assert (config.servers, config.local_clocks, config.restrictions) == ((), (), ())
