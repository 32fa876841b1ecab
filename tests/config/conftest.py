"""No test in this package may touch DNS: the system resolver is replaced by a tripwire."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("config tests must not use the system resolver")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
