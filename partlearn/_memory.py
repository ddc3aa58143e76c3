"""What this process holds in memory, beside what it has resident.

Resident memory (RSS, ``ru_maxrss``) counts the page cache of the memory-mapped
features: pages the kernel shares and drops under pressure, so it grows with the
feature store whatever the code holds. ``anon`` is the process's own memory (the
``Anonymous`` pages of ``/proc/self/smaps_rollup``: heap, arrays, the model), ``uss``
what no other process shares (``Private_Clean + Private_Dirty``; file pages that only
this process maps count there too). ``PeakSampler`` samples them in a thread and gives
the peaks since the last ``mark``: the runner's per-stage figures. Linux only; elsewhere
every figure is ``None``. Children (data-loader workers, a dask cluster) are not counted.
"""

from __future__ import annotations

import threading

_FIELDS = {"Rss": "rss_mb", "Anonymous": "anon_mb", "Private_Clean": "uss_mb",
           "Private_Dirty": "uss_mb"}


def snapshot() -> dict[str, float | None]:
    """``{"rss_mb", "anon_mb", "uss_mb"}`` of this process now (``None`` where
    ``/proc/self/smaps_rollup`` cannot be read)."""
    out = dict.fromkeys(("rss_mb", "anon_mb", "uss_mb"), None)
    try:
        with open("/proc/self/smaps_rollup") as f:
            lines = f.readlines()
    except OSError:
        return out
    kb = dict.fromkeys(out, 0)
    for line in lines:
        name, _, rest = line.partition(":")
        if name in _FIELDS:
            kb[_FIELDS[name]] += int(rest.split()[0])
    return {k: round(v / 1024, 1) for k, v in kb.items()}


class PeakSampler:
    """The peaks of ``snapshot`` every ``period`` seconds, in a daemon thread, from
    ``start`` to ``stop``; ``mark()`` returns the peaks since the previous mark (or the
    start) and begins the next interval; ``overall()`` the peaks since the start."""

    def __init__(self, period: float = 0.2):
        self.period = period
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since: dict = {}
        self._all: dict = {}

    def _sample(self) -> None:
        now = snapshot()
        with self._lock:
            for peaks in (self._since, self._all):
                for k, v in now.items():
                    if v is not None:
                        peaks[k] = max(peaks.get(k, 0.0), v)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def start(self) -> "PeakSampler":
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="partlearn-memory",
                                        daemon=True)
        self._thread.start()
        return self

    def mark(self) -> dict:
        self._sample()
        with self._lock:
            out, self._since = self._since, {}
        self._sample()  # the next interval starts from what is held now
        return {f"peak_{k}": v for k, v in out.items()}

    def overall(self) -> dict:
        self._sample()
        with self._lock:
            return {f"peak_{k}": v for k, v in self._all.items()}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
