"""What the daemon would otherwise load lazily, loaded before it confines itself.

After -i the interpreter's standard library is out of sight, and after -u it may be
unreadable (an interpreter under /root): a module first imported on a path that runs
later (the first name lookup, the first TLS handshake with a name, a reload) would fail
there with ModuleNotFoundError, long after start-up. So `preload()` runs just before the
chroot and the drop of privileges and imports all of them.

The list is not guessed: tests/security/test_jail.py runs a confined daemon through its
paths (names, pools, NTS-KE both ways, NTS, mode 6, metrics, the status socket, SIGHUP)
under an audit hook that reports every module imported after confinement, and fails
naming any that is missing here.
"""

from __future__ import annotations

import codecs
import importlib

LAZY_MODULES = (
    # loop.getaddrinfo() runs in the default executor, whose module asyncio imports on
    # first use.
    "concurrent.futures.thread",
    # Host names are encoded with the idna codec (getaddrinfo, TLS SNI); the codec is looked
    # up, and its modules (stringprep, unicodedata) imported, on the first name.
    "encodings.idna",
)


def preload() -> None:
    for name in LAZY_MODULES:
        importlib.import_module(name)
    # The codec registry's search also runs once per codec name; do it while we can.
    codecs.lookup("idna")
