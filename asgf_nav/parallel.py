"""Process pools for the bakes: results as they finish, and workers that exit on their own.

``with Pool() as pool`` terminates its workers on leaving the block. A worker still shutting down then
dies before its finalizers run, and a named semaphore it created (tqdm's write lock is one) is never
released: the resource tracker warns "There appear to be N leaked semaphore objects" at exit. Closing
and joining the pool after the last result lets every worker exit normally; on an error, or when the
caller stops early, the pool is still terminated so that nothing keeps running.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


def spawn_imap_unordered(fn: Callable[[Job], Result], jobs: Iterable[Job], workers: int) -> Iterator[Result]:
    """Yield ``fn(job)`` for every job, in completion order, from ``workers`` spawned processes."""
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(fn, jobs)
        pool.close()
        pool.join()
