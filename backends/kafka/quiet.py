"""aiokafka's connection errors, at most one of a kind per interval.

While a broker is down every client of the process (the tables' readers, the group
members, the producers) retries every 100 ms and logs each failure: hundreds of
lines a second that hide the one line saying what is wrong (``backend.unreachable``
and the Transient errors, which name the brokers and the fix). This filter lets the
first warning or error of each kind (logger and message template) through, drops
the repeats for ``interval`` seconds, and says on the next one how many it dropped.
"""

from __future__ import annotations

import logging
import time

#: seconds between two lines of the same kind
INTERVAL = 30.0


class Repeats(logging.Filter):
    def __init__(self, interval: float = INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        #: (logger, template) -> (when last let through, how many dropped since)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        self._seen[key] = (now, 0)
        if last is not None and last[1]:
            record.msg = (
                f"{record.getMessage()} ({last[1]} more like it in the last"
                f" {self.interval:g} s not logged)"
            )
            record.args = ()
        return True


_installed = Repeats()


def quiet_aiokafka() -> None:
    """Put the filter on every aiokafka logger (a logger's filters do not see its
    children's records, so each gets it); calling it again is harmless."""
    import aiokafka  # noqa: F401 - its modules create their loggers on import

    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "aiokafka"]
    for name in ["aiokafka", *names]:
        logger = logging.getLogger(name)
        if _installed not in logger.filters:
            logger.addFilter(_installed)
