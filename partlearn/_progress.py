"""Progress on long loops: a tqdm bar at a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

logger = logging.getLogger("partlearn")


class _LogProgress:
    """Logs ``desc: n/total (pct), rate, eta`` at most every ``interval`` seconds."""

    def __init__(self, iterable, total, desc, unit, interval):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.interval, self.n, self.closed = interval, 0, False
        self.start = self.last = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._log(now)

    def _log(self, now):
        rate = self.n / max(now - self.start, 1e-9)
        if self.total:
            eta = (self.total - self.n) / max(rate, 1e-9)
            logger.info("%s: %d/%d %s (%.0f%%), %.1f %s/s, eta %.0fs", self.desc, self.n,
                        self.total, self.unit, 100 * self.n / self.total, rate, self.unit, eta)
        else:
            logger.info("%s: %d %s, %.1f %s/s", self.desc, self.n, self.unit, rate, self.unit)

    def close(self):
        """The final line, once (iterated inside ``with``, it is closed twice)."""
        if self.n and not self.closed:
            self._log(time.monotonic())
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(iterable=None, *, total=None, desc="", unit="it", interval=30.0,
             disable=False):
    """Wrap ``iterable`` (or use as a context manager with ``.update(n)``) to report progress;
    ``disable``: silently."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if disable or sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, disable=disable)
    return _LogProgress(iterable, total, desc, unit, interval)
