"""Run one function over contiguous row ranges in forked worker processes: the contamination gate's two cores.

The gate's row-wise work (n-gram lookups, lexical candidates, window checks) is numpy and Python that one process
runs on one core. `map_shards(work, n_rows, workers)` splits ``range(n_rows)`` into contiguous ranges, runs
``work(lo, hi)`` for each in a pool of `workers` processes forked from the caller, and returns the results in range
order, so a caller that concatenates them gets exactly what one process would have computed: nothing depends on
the number of workers (tests/test_contamination_shards.py checks it).

`work` is a closure over the caller's data (texts, indexes): the fork hands it to the workers as they are, copy on
write, without pickling; only the results travel back. With one worker, or fewer rows than ``MIN_ROWS_PER_WORKER``
each, it runs in the calling process. Platforms without ``fork`` run in the calling process too.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
MIN_ROWS_PER_WORKER = 2048  # below this, starting a worker costs more than it saves
_WORK: Callable | None = None  # the work of the map in flight, inherited by the forked workers


def _run(bounds: tuple[int, int]) -> Any:
    assert _WORK is not None
    return _WORK(*bounds)


def ranges(n_rows: int, shards: int) -> list[tuple[int, int]]:
    """`shards` contiguous (lo, hi) ranges covering range(n_rows), sizes differing by at most one."""
    shards = max(1, min(shards, n_rows))
    step, extra = divmod(n_rows, shards)
    out, lo = [], 0
    for k in range(shards):
        hi = lo + step + (k < extra)
        out.append((lo, hi))
        lo = hi
    return out


def map_shards(work: Callable[[int, int], T], n_rows: int, workers: int = 1) -> list[T]:
    """[work(lo, hi) for each contiguous range], computed by `workers` forked processes (see the module doc)."""
    global _WORK
    workers = max(1, min(workers, n_rows // MIN_ROWS_PER_WORKER))
    if workers == 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [work(0, n_rows)] if n_rows else []
    _WORK = work
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            # two ranges a worker: one long row range finishing last does not leave the other core idle for long
            return pool.map(_run, ranges(n_rows, 2 * workers), chunksize=1)
    finally:
        _WORK = None
