"""Where a stage's independent tasks run: in this process, or on a Dask cluster.

A stage hands its tasks to ``backend.map(fn, items, shared=...)`` and gets
``(index, result)`` pairs back in the order the tasks finish; the stage's code is
the same whichever backend runs them, and so are its results (the same functions
on the same inputs; tested, local against dask).

- ``LocalBackend`` (``backend = "local"``): ``n_jobs`` threads of this process
  (joblib, shared memory: memory maps and arrays are shared as they are).
- ``DaskBackend`` (``backend = "dask"``): a ``distributed`` cluster, the one at
  ``dask.scheduler``, or a ``LocalCluster`` the run starts and stops. Arrays that
  are views of a memory-mapped ``.npy`` file (the store's features) travel as
  ``Mapped`` references, (file, offset, shape, dtype), and workers map the file
  themselves: data moves through the shared store, not through the scheduler.
  ``shared`` values are scattered to every worker once. A worker that dies is
  replaced and its task run again elsewhere (the scheduler's
  ``allowed-failures``); when it held the last copy of a shared value, the value is
  scattered again and the tasks that lost it resubmitted. A task that raises is not
  retried.

Task functions must be importable (module-level) functions; they see the items
with every ``Mapped`` opened again as a read-only memory map.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import threading
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs

from ._validation import PartlearnError
from .config import DaskConfig

_D = DaskConfig  # the defaults live there, once
_RESCATTERS = 3  # times a map scatters its shared data again after a worker took it

logger = logging.getLogger(__name__)


class BackendError(PartlearnError):
    """The dask scheduler cannot be reached, or the cluster cannot run the tasks (exit 1)."""

    exit_code = 1


@dataclass(frozen=True)
class Mapped:
    """A read-only view of an ``.npy`` file's bytes: ``shape`` of ``dtype`` at ``offset``."""

    filename: str
    offset: int
    shape: tuple
    dtype: str

    def open(self) -> np.ndarray:
        return np.ndarray(self.shape, np.dtype(self.dtype), buffer=_mapping(self.filename),
                          offset=self.offset)


_MAPS: dict[str, np.memmap] = {}
_MAPS_LOCK = threading.Lock()


def _mapping(filename: str) -> np.memmap:
    """The whole file mapped read-only, once per process."""
    with _MAPS_LOCK:
        m = _MAPS.get(filename)
        if m is None:
            m = _MAPS[filename] = np.memmap(filename, np.uint8, mode="r")
        return m


def mapped(a):
    """``a`` as a ``Mapped`` reference when it is a C-contiguous view of a memory-mapped
    file (``np.load(..., mmap_mode="r")``, and slices of it), else ``a`` unchanged."""
    mm = getattr(a, "_mmap", None)
    if not isinstance(a, np.memmap) or mm is None or not a.flags.c_contiguous or not a.filename:
        return a
    # numpy maps the file from the page boundary below the array's offset, and views of a
    # memmap keep the mapped array's offset: the file position is the address difference
    # from the mapping's start plus that boundary
    start = int(a.offset) - int(a.offset) % mmap.ALLOCATIONGRANULARITY
    where = a.ctypes.data - np.frombuffer(mm, np.uint8).ctypes.data + start
    return Mapped(str(a.filename), int(where), tuple(a.shape), a.dtype.str)


def ship(obj):
    """``obj`` with every memory-mapped array in it (in lists, tuples and dicts) replaced by
    its ``Mapped`` reference."""
    if isinstance(obj, np.ndarray):
        return mapped(obj)
    if type(obj) in (list, tuple):
        return type(obj)(ship(o) for o in obj)
    if isinstance(obj, dict):
        return {k: ship(v) for k, v in obj.items()}
    return obj


def land(obj):
    """The inverse of ``ship``: every ``Mapped`` opened."""
    if isinstance(obj, Mapped):
        return obj.open()
    if type(obj) in (list, tuple):
        return type(obj)(land(o) for o in obj)
    if isinstance(obj, dict):
        return {k: land(v) for k, v in obj.items()}
    return obj


def _call(fn, k, item, shared):
    return k, fn(item, **shared)


def _call_landed(fn, k, item, shared):
    """``_call`` on a worker: the references in ``item`` and ``shared`` opened first."""
    return k, fn(land(item), **{name: land(v) for name, v in shared.items()})


class LocalBackend:
    """Tasks on ``n_jobs`` threads of this process (``-1``: one per core)."""

    name = "local"
    shares_memory = True  # tasks see the caller's objects themselves

    def __init__(self, n_jobs: int = -1):
        self.n_jobs = n_jobs

    def map(self, fn, items, shared=None, resources=None, threads=True):
        """Yield ``(k, fn(items[k], **shared))`` as tasks finish. ``threads=False``: one
        after the other in this thread (a task that uses every core itself)."""
        items, shared = list(items), dict(shared or {})
        n = effective_n_jobs(self.n_jobs) if threads else 1
        if n == 1 or len(items) < 2:
            for k, item in enumerate(items):
                yield k, fn(item, **shared)
            return
        yield from Parallel(n_jobs=n, require="sharedmem", return_as="generator_unordered")(
            delayed(_call)(fn, k, item, shared) for k, item in enumerate(items))

    def joblib(self):
        """The joblib backend for a ``Parallel`` inside a stage (scikit-learn's CV)."""
        return contextlib.nullcontext()

    def close(self) -> None:
        pass


class DaskBackend:
    """Tasks on a ``distributed`` cluster: the scheduler at ``scheduler``, or a
    ``LocalCluster`` of ``n_workers`` single-threaded worker processes started here
    (``n_workers=0``: one per core) and stopped by ``close``."""

    name = "dask"
    shares_memory = False
    n_jobs = -1  # a joblib Parallel inside a task grid: every worker of the cluster

    def __init__(self, scheduler: str = _D.scheduler, n_workers: int = _D.n_workers,
                 timeout: float = _D.timeout, gpu_resource: str = _D.gpu_resource):
        try:
            from distributed import Client, LocalCluster
        except ImportError as e:
            raise BackendError("backend = 'dask' needs the dask and distributed packages: "
                               "pip install 'dask[distributed]'") from e
        self._cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError) as e:
                raise BackendError(f"dask.scheduler={scheduler!r}: cannot reach a scheduler "
                                   f"there within {timeout:g} s ({type(e).__name__}); start "
                                   "one with `dask scheduler`, or leave dask.scheduler empty "
                                   "to run a LocalCluster") from None
            try:
                self.client.wait_for_workers(1, timeout=timeout)
            except TimeoutError:
                self.client.close()
                raise BackendError(f"dask.scheduler={scheduler!r} has no workers after "
                                   f"{timeout:g} s; start some with `dask worker "
                                   f"{scheduler}`") from None
            workers = self.client.scheduler_info()["workers"].values()
            if gpu_resource and not any(w.get("resources", {}).get(gpu_resource)
                                        for w in workers):  # its tasks would wait forever
                self.client.close()
                raise BackendError(f"no worker at dask.scheduler={scheduler!r} declares the "
                                   f"resource {gpu_resource!r} (dask.gpu_resource); start the "
                                   f"GPU workers with `dask worker {scheduler} --resources "
                                   f"{gpu_resource}=1`, or leave dask.gpu_resource empty")
            logger.info("dask: connected to %s (%d workers)", scheduler, len(workers))
        else:
            n = n_workers or os.cpu_count() or 1
            try:
                self._cluster = LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                    resources={gpu_resource: 1} if gpu_resource else None)
            except RuntimeError as e:  # e.g. a script without `if __name__ == "__main__":`
                raise BackendError(f"could not start a LocalCluster of {n} workers ({e}); a "
                                   "script that runs a pipeline with backend = 'dask' must "
                                   "do so under `if __name__ == \"__main__\":`") from e
            self.client = Client(self._cluster, set_as_default=False)
            logger.info("dask: started a LocalCluster of %d single-threaded workers", n)

    def map(self, fn, items, shared=None, resources=None, threads=True):
        """Yield ``(k, fn(items[k], **shared))`` as tasks finish; ``resources`` e.g.
        ``{"GPU": 1}`` restricts the tasks to the workers that declare it.

        Scattered data cannot be recomputed: when a worker dies with the last copy of a
        ``shared`` value, the tasks that need it are cancelled, and they are submitted
        again with the values scattered afresh (``_RESCATTERS`` times at most)."""
        from distributed import as_completed

        items = [ship(item) for item in items]
        shared = {name: ship(v) for name, v in (shared or {}).items()}
        pending = list(range(len(items)))
        for attempt in range(_RESCATTERS + 1):
            if not pending:
                return
            if attempt:
                logger.warning("dask: a worker died holding the last copy of this stage's "
                               "shared data; scattering it again for %d task(s)", len(pending))
            scattered = {name: self.client.scatter(v, broadcast=True, hash=False)
                         for name, v in shared.items()}
            futures = [self.client.submit(_call_landed, fn, k, items[k], scattered,
                                          pure=False, resources=resources) for k in pending]
            done = set()
            try:
                for future in as_completed(futures, loop=self.client.loop):
                    if future.cancelled():  # its scattered input was lost with a worker
                        continue
                    k, result = future.result()
                    done.add(k)
                    yield k, result
            finally:
                for future in futures:
                    future.release()
            pending = [k for k in pending if k not in done]
        raise BackendError(f"dask: {len(pending)} task(s) of {getattr(fn, '__name__', fn)} "
                           f"lost their shared data with a dying worker {_RESCATTERS + 1} "
                           "times; check the workers' logs (memory limits?)")

    def joblib(self):
        from joblib import parallel_config

        return parallel_config(backend="dask", client=self.client, wait_for_workers_timeout=60)

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def from_config(cfg):
    """The backend of a ``Config`` (its ``backend``, ``n_jobs`` and ``[dask]``)."""
    if cfg.backend == "dask":
        d = cfg.dask
        return DaskBackend(d.scheduler, d.n_workers, d.timeout, d.gpu_resource)
    return LocalBackend(cfg.n_jobs)


__all__ = ["BackendError", "DaskBackend", "LocalBackend", "Mapped", "from_config", "land",
           "mapped", "ship"]
