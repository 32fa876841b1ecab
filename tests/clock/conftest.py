"""Safety net: no test in this package can change this machine's clock.

Every SystemClock built without an injected libc gets the real libc wrapped in ReadOnlyLibc,
which lets clock_adjtime/adjtimex through only with modes == 0 (a pure read) and fails the
test otherwise, before the call reaches the kernel.
"""

from __future__ import annotations

import ctypes
from typing import Any

import pytest

from pyntpd.clock import kernel as system

# The unpatched factory, for the one test that checks how it resolves libc (with CDLL faked).
REAL_DEFAULT_LIBC = system.default_libc


class ReadOnlyLibc:
    def __init__(self, real: Any) -> None:
        self._real = real

    def _guard(self, ref: Any) -> None:
        modes = ref._obj.modes
        if modes != 0:
            pytest.fail(f"a test tried a mutating adjtimex call (modes=0x{modes:x})")

    def clock_adjtime(self, clockid: int, ref: Any) -> int:
        self._guard(ref)
        return self._real.clock_adjtime(clockid, ref)

    def adjtimex(self, ref: Any) -> int:
        self._guard(ref)
        return self._real.adjtimex(ref)


@pytest.fixture(autouse=True)
def _read_only_kernel_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ctypes.CDLL(None, use_errno=True)
    monkeypatch.setattr(system, "default_libc", lambda: ReadOnlyLibc(real))


@pytest.fixture
def real_libc() -> ReadOnlyLibc:
    return system.default_libc()
