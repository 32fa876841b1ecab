"""LogOnce: a persistent condition logged once, not once per packet or per retry.

Below every layer that logs (the daemon, the statistics files, the driver), so that none of
them needs the daemon's logging set-up to use it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

LOGGER_NAME = "pyntpd"


class LogOnce:
    """Log a condition once until reset(key), so a persistent problem doesn't flood the log.

    Keys may come from the network (one per peer address), so at most `max_keys` are kept;
    the oldest is forgotten first, and may then be logged again.
    """

    def __init__(self, logger: logging.Logger | None = None, max_keys: int = 1024) -> None:
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.max_keys = max_keys
        self._seen: OrderedDict[object, None] = OrderedDict()

    def log(self, key: object, level: int, msg: str, *args: object) -> bool:
        """Log `msg` unless `key` was already logged since its last reset; True if logged."""
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: object, msg: str, *args: object) -> bool:
        return self.log(key, logging.WARNING, msg, *args)

    def error(self, key: object, msg: str, *args: object) -> bool:
        return self.log(key, logging.ERROR, msg, *args)

    def info(self, key: object, msg: str, *args: object) -> bool:
        return self.log(key, logging.INFO, msg, *args)

    def reset(self, key: object | None = None) -> bool:
        """Forget `key` (the condition cleared), or every key if None; True if it was set."""
        if key is None:
            had = bool(self._seen)
            self._seen.clear()
            return had
        if key in self._seen:
            del self._seen[key]
            return True
        return False
