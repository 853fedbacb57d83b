"""Run many simulation tasks: in this process, or as tasks on a Dask cluster.

``run_tasks(tasks, ...)`` takes ``(key, fn, args)`` triples and returns ``{key: result}``.
Where the tasks ran never shows in the results: each task is a pure function of its
arguments (:func:`exchange.sim.ensemble.run_task`), and callers order the results by key.

* ``workers=0``: one after another in this process (no Dask needed).
* default: a ``dask.distributed.LocalCluster`` with ``workers`` worker processes (default one
  per core), one thread each — a run is CPU-bound Python, so threads would share one GIL.
* ``scheduler="tcp://HOST:8786"``: the same tasks on a cluster the analyst already runs (its
  workers need this package installed, the same version).

Dask gives what a home-made pool would have to re-invent: a worker that dies mid-run (OOM
killer, a lost machine) has its tasks — those running and the results it held but had not yet
handed over — rerun elsewhere (``distributed.scheduler.allowed-failures``, default 3 deaths
per task, before the task is reported as failed). Results stream back as they finish
(``as_completed``) and are released at once; at most ``window`` tasks are submitted ahead of
the results, so the scheduler's memory stays bounded however many runs a sweep has.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable


class _Bar:
    """tqdm when installed (the sim extra), else the package's own stderr bar."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.t = None
        self.p = None
        if not enabled:
            return
        try:
            from tqdm import tqdm

            self.t = tqdm(total=total, desc=label, unit="run", file=sys.stderr, dynamic_ncols=True)
        except ImportError:
            from .progress import Progress

            self.p = Progress(total, label)

    def update(self, note: str = "") -> None:
        if self.t is not None:
            self.t.update(1)
            if note:
                self.t.set_postfix_str(note, refresh=False)
        elif self.p is not None:
            self.p.update(1, note)

    def close(self) -> None:
        if self.t is not None:
            self.t.close()
        elif self.p is not None:
            self.p.close()


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def have_dask() -> bool:
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


def local_cluster(workers: int):
    """A LocalCluster of ``workers`` single-threaded worker processes; its HTTP endpoints on
    a free port (never a clash with another cluster on 8787)."""
    from dask.distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )


class Runner:
    """Where the tasks run. Use as a context manager; ``client`` is None in process."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None, client=None):
        self.workers = default_workers() if workers is None else workers
        self.scheduler = scheduler
        self.client = client
        self._own: list = []
        self.where = "in-process"

    def __enter__(self) -> "Runner":
        if self.client is not None:
            self.where = "dask (given client)"
            return self
        if self.scheduler:
            from dask.distributed import Client

            self.client = Client(self.scheduler, timeout="20s")
            self._own.append(self.client)
            self.where = f"dask {self.scheduler}"
        elif self.workers > 0:
            cluster = local_cluster(self.workers)
            self.client = cluster.get_client() if hasattr(cluster, "get_client") else None
            if self.client is None:
                from dask.distributed import Client

                self.client = Client(cluster)
            self._own += [self.client, cluster]
            self.where = f"dask LocalCluster, {self.workers} worker(s)"
        return self

    def __exit__(self, *exc) -> None:
        for x in self._own:
            try:
                x.close()
            except Exception:  # noqa: BLE001 - closing a cluster that lost a worker
                pass
        self._own = []

    def n_workers(self) -> int:
        if self.client is None:
            return 1
        return max(1, len(self.client.nthreads()))

    def run(
        self,
        tasks: list[tuple[str, Callable, tuple]],
        progress: bool = True,
        label: str = "runs",
        window: int | None = None,
        on_result: Callable[[str, object], None] | None = None,
    ) -> dict[str, object]:
        bar = _Bar(len(tasks), label, progress)
        try:
            if self.client is None:
                return _serial(tasks, bar, on_result)
            return _dask(
                self.client, tasks, bar, window or max(16, 4 * self.n_workers()), on_result
            )
        finally:
            bar.close()


def _serial(tasks, bar, on_result) -> dict:
    out = {}
    for key, fn, args in tasks:
        out[key] = r = fn(*args)
        bar.update(key)
        if on_result:
            on_result(key, r)
    return out


def _dask(client, tasks, bar, window: int, on_result) -> dict:
    from dask.distributed import as_completed

    todo: Iterable = iter(tasks)
    out: dict = {}

    def submit_next(ac) -> bool:
        nxt = next(todo, None)
        if nxt is None:
            return False
        key, fn, args = nxt
        # an explicit key per run: a rerun after a lost worker is the same task, and the
        # scheduler's log names the run
        ac.add(client.submit(fn, *args, key=key, pure=False))
        return True

    ac = as_completed()
    for _ in range(window):
        if not submit_next(ac):
            break
    for fut in ac:
        r = fut.result()
        out[fut.key] = r
        fut.release()
        bar.update(str(fut.key))
        if on_result:
            on_result(fut.key, r)
        submit_next(ac)
    return out


def wait_workers(client, n: int, timeout: float = 60.0) -> None:
    """Block until ``n`` workers are connected (a restarted worker rejoins)."""
    t0 = time.monotonic()
    while len(client.nthreads()) < n:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"fewer than {n} Dask workers after {timeout:.0f} s")
        time.sleep(0.1)
