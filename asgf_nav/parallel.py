"""Process pools for the bakes: results as they finish, and workers that exit on their own.

``with Pool() as pool`` terminates its workers on leaving the block. A worker still shutting down then
dies before its finalizers run, and a named semaphore it created (tqdm's write lock is one) is never
released: the resource tracker warns "There appear to be N leaked semaphore objects" at exit. Closing
and joining the pool after the last result lets every worker exit normally; on an error, or when the
caller stops early, the pool is still terminated so that nothing keeps running.

A Ctrl-C reaches every process of the terminal's group, workers included; they ignore it and leave
the stop to the parent, which terminates them. Terminated that way, a worker would leak tqdm's named
write lock, so workers give tqdm a plain thread lock before any bar exists (their bars still write whole
lines; nothing else in a worker needs a lock shared between processes).

A SIGTERM (the parent's terminate, or a scheduler's to the whole process group) ends a worker through
``SystemExit``, not the default instant death: an idle worker holds the pool's task-queue lock while it
waits, and one that died holding it would keep the parent's ``terminate()`` waiting for that lock (see
below); unwinding also lets :func:`asgf_nav.io.atomic_write` delete its temporary file. The worker
ignores any later SIGTERM while it unwinds: after a scheduler's signal to the group comes the parent's
own terminate(), and a second exception would cut the first's clean-up short (landing in an import's
weakref callback, it was only printed as "Exception ignored"). Python drops an exception raised inside
a weakref callback or ``__del__``: when that happens to the exit, the next SIGTERM raises again; and
should the exit be swallowed some other way or hang, SIGALRM's default action ends the worker
``WORKER_EXIT_GRACE_S`` seconds later. A worker that ends normally (it took the pool's end-of-work
sentinel) can still get the parent's terminate() while Python runs its exit callbacks: from its first
``atexit`` callback on it is treated as unwinding too, so the SIGTERM does not interrupt logging's
shutdown (which printed "Exception ignored in atexit callback"); that includes a SIGTERM that Python
handles on entering the callback, before the callback's first line has run, and one it handles on
entering the join of the threads that interpreter shutdown runs before any callback (``threading._shutdown``).

Python runs a signal's handler in the main thread, and only when that thread next runs bytecode. A
SIGTERM that lands just before the main thread blocks in a lock (between its last check for signals and
the wait), or one the kernel hands to another thread, leaves the handler pending while the main thread
waits, for good if the lock is the task queue's that the parent's ``terminate()`` holds: the parent's
``join()`` then waits forever too. So a thread of the worker, with SIGTERM blocked, reads the signal
wakeup pipe (``signal.set_wakeup_fd``: a byte for each signal, whichever thread took it) and after a
SIGTERM signals the main thread itself every ``STOP_RESEND_S`` until the worker has exited; a signal sent
to the main thread interrupts its wait, and the handler ignores the repeats while the worker unwinds. A
process forked from a worker drops the pipe, whose reader stayed in the worker (its SIGTERM would otherwise
stop the worker).

A worker also unwinds when the parent process dies, however it dies (a SIGKILL runs no clean-up in the
parent): the same thread waits on the parent's sentinel and then signals the worker's main thread.
``PR_SET_PDEATHSIG`` would not do: it fires when the parent *thread* that started the worker ends, and
the pool starts replacement workers from its worker-handler thread, which ends inside ``terminate()``;
those workers then died at random moments, one holding the task queue's lock, and ``terminate()``
waited for it forever.

A worker that dies while jobs are outstanding (the kernel's out-of-memory killer, a signal meant for it
alone) is replaced by ``multiprocessing.Pool``, but the job it held never returns: the caller would wait
forever. :func:`spawn_imap_unordered` watches its workers and raises :class:`WorkerDiedError` instead.
A worker killed outright while it waited for a task keeps the task queue's lock for good, so the pool's
``terminate()`` takes that lock with a timeout (``QUEUE_LOCK_WAIT_S``) instead of waiting forever.
Two narrower windows remain: a worker killed in the microseconds it holds the result queue's lock to
send a result, or one killed while idle after the last result (``close()`` then waits for it).

Each worker gets its share of the cores for numpy's BLAS (``cores // workers``, at least one): with the
default, every worker starts a BLAS thread per core; two workers on two cores baked the layout and
acoustics of four Replica scenes in 40.4-42.7 s that way, against 37.2-38.2 s with one BLAS thread each
(two runs each, in turns).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.pool
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from asgf_nav.devices import omp_thread_cap, usable_cpus
from asgf_nav.errors import UserInputError
from asgf_nav.logging_utils import setup_logging
from asgf_nav.termination import raise_if_stopped, uninterrupted

logger = logging.getLogger(__name__)

Job = TypeVar("Job")
Result = TypeVar("Result")
QUEUE_LOCK_WAIT_S = 5.0  # terminate()'s wait for the task queue's lock, which a killed worker may hold
WORKER_EXIT_GRACE_S = 10  # after a SIGTERM, a worker that has not exited by then is ended by SIGALRM
STOP_RESEND_S = 0.5  # after a SIGTERM, a worker's main thread is signalled again this often until it exits
_exiting = False  # this worker is unwinding from a SIGTERM
_wakeup_pipe: tuple[int, int] | None = None  # the signal wakeup pipe (read, write) of exit_on_sigterm


class WorkerDiedError(UserInputError, RuntimeError):
    """A pool worker ended before the jobs were done; the job it was running is lost."""


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    global _exiting
    if _exiting:  # already on the way out (see the module's notes)
        return
    if getattr(frame, "f_code", None) in _ENDING_CODE:
        # the signal came as the process began to end (joining its threads, then the exit callbacks), and
        # Python ran this handler on entering that step, before it could mark the process as ending: it is
        # ending, not to be interrupted
        _ending_anyway()
        return
    _exiting = True
    if hasattr(signal, "alarm"):  # POSIX: nothing in a worker handles SIGALRM, so by default it ends the process
        signal.alarm(WORKER_EXIT_GRACE_S)
    raise SystemExit(128 + signum)


def _notice_a_dropped_exit(unraisable: object) -> None:
    """``sys.unraisablehook`` of a worker: the SIGTERM's exit was dropped, so the next SIGTERM raises again."""
    global _exiting
    if _exiting and isinstance(getattr(unraisable, "exc_value", None), SystemExit):
        _exiting = False
    sys.__unraisablehook__(unraisable)  # still printed: "Exception ignored in ..."


def _ending_anyway() -> None:
    """``atexit`` callback of a worker, registered after logging's so that it runs first: the process is
    ending, so a SIGTERM from now on is ignored as during an unwind (with the same SIGALRM backstop)."""
    global _exiting
    if not _exiting:
        _exiting = True
        if hasattr(signal, "alarm"):
            signal.alarm(WORKER_EXIT_GRACE_S)


# where an ending process runs first: interpreter shutdown joins the threads (threading._shutdown, before
# any exit callback), then the exit callbacks, of which _ending_anyway is registered to run first
_ENDING_CODE = tuple(
    f.__code__ for f in (getattr(threading, "_shutdown", None), _ending_anyway) if hasattr(f, "__code__")
)


def exit_on_sigterm(parent_sentinel: int | None = None) -> None:
    """Make SIGTERM unwind this process as a bake worker does, and so the death of the parent whose
    ``sentinel`` is given (see the module's notes). Call it from the main thread; a later call keeps the
    first one's stop-delivering thread."""
    global _wakeup_pipe
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.unraisablehook = _notice_a_dropped_exit
    if _wakeup_pipe is not None:  # set up by an earlier call
        return
    atexit.register(_ending_anyway)
    if not hasattr(signal, "pthread_kill"):  # not POSIX: no thread can signal the main one
        return
    _wakeup_pipe = os.pipe()
    read_end, write_end = _wakeup_pipe
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)  # a byte per signal, whichever thread took it
    deliverer = threading.Thread(
        target=_deliver_stops, args=(read_end, parent_sentinel), name="deliver-stops", daemon=True
    )
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        deliverer.start()  # with SIGTERM blocked, as the new thread keeps it: the kernel hands it to the main thread
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _forget_the_wakeup_pipe() -> None:
    """In a forked child: the pipe and its reader are the parent's (a SIGTERM to the child alone would have
    the parent's reader stop the parent), and the reader thread did not come along."""
    global _wakeup_pipe
    if _wakeup_pipe is None:
        return
    with contextlib.suppress(ValueError):  # forked from a thread other than the main one
        signal.set_wakeup_fd(-1)
    for fd in _wakeup_pipe:
        with contextlib.suppress(OSError):
            os.close(fd)
    _wakeup_pipe = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_wakeup_pipe)


def worker_threads(workers: int) -> int:
    """BLAS threads per worker: the usable cores (the process's affinity) shared among ``workers`` processes,
    at least one, and no more than the parent's ``OMP_NUM_THREADS`` where that is set (the user's cap)."""
    threads = max(1, usable_cpus() // max(1, int(workers)))
    return min(threads, omp_thread_cap() or threads)


def _deliver_stops(wakeup: int, parent_sentinel: int | None) -> None:
    """A worker's thread: once a SIGTERM has come (its byte on the signal wakeup pipe) or the parent has
    gone, signal the main thread, and again every ``STOP_RESEND_S`` until the process has ended; the
    handler ignores the repeats while the worker unwinds."""
    main = threading.main_thread().ident
    watched = [wakeup] if parent_sentinel is None else [wakeup, parent_sentinel]
    delay = 0.0
    while True:
        ready = multiprocessing.connection.wait(watched)
        if parent_sentinel in ready:
            break
        if int(signal.SIGTERM) in os.read(wakeup, 512):
            delay = STOP_RESEND_S  # the main thread most likely handles this one itself
            break
    while True:
        time.sleep(delay)
        signal.pthread_kill(main, signal.SIGTERM)
        delay = STOP_RESEND_S


def _init_worker(threads: int, log_level: int) -> None:
    """Worker initializer: Ctrl-C is the parent's to handle, SIGTERM unwinds and so does the parent's death
    (see the module's notes); tqdm's lock is a thread lock, not a named semaphore; BLAS libraries loaded later
    read the variables, those already loaded are set; and the worker logs as its parent does (a spawned
    process starts with no logging set up, where a warning would print bare and an INFO line be lost)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(log_level)
    parent = multiprocessing.parent_process()  # its sentinel is ready already if the parent died before this
    exit_on_sigterm(parent.sentinel if parent is not None else None)
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)  # for the worker's lifetime


def spawn_imap_unordered(fn: Callable[[Job], Result], jobs: Iterable[Job], workers: int) -> Iterator[Result]:
    """Yield ``fn(job)`` for every job, in completion order, from ``workers`` spawned processes."""
    context = multiprocessing.get_context("spawn")
    initargs = (worker_threads(workers), logging.getLogger().getEffectiveLevel())
    with _Pool(workers, initializer=_init_worker, initargs=initargs, context=context) as pool:
        results = pool.imap_unordered(fn, jobs)
        started: dict[int, multiprocessing.process.BaseProcess] = {}  # every worker the pool has run
        while True:
            _check_workers(pool, started)
            try:
                with uninterrupted():  # a stop landing in the iterator's lock would hang terminate() on it
                    result = results.next(timeout=0.2)
            except multiprocessing.TimeoutError:
                continue
            except StopIteration:
                break
            yield result
        pool.close()
        pool.join()


class _Pool(multiprocessing.pool.Pool):
    """``multiprocessing.pool.Pool`` whose ``terminate()`` waits at most ``QUEUE_LOCK_WAIT_S`` for the task
    queue's lock (see the module's notes)."""

    @staticmethod
    def _help_stuff_finish(inqueue: Any, task_handler: threading.Thread, size: int) -> None:
        # As the standard library's: hold the lock, so that no worker takes another task, and empty the queue
        # for as long as the task-handler thread may still be blocked writing to it. Without the lock (its
        # holder was killed) the other workers wait for it, so reading alone is still safe.
        if not inqueue._rlock.acquire(timeout=QUEUE_LOCK_WAIT_S):
            logger.warning("a killed worker kept the task queue's lock; terminating the pool without it")
        while task_handler.is_alive() and inqueue._reader.poll():
            inqueue._reader.recv()
            time.sleep(0)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _check_workers(pool: object, started: dict[int, multiprocessing.process.BaseProcess]) -> None:
    """Raise WorkerDiedError once a worker has ended: before close(), none ends on its own. The pool replaces
    (and forgets) a dead worker within 0.1 s, so ``started`` keeps every one seen; a worker that lived
    under one 0.2 s wait would go unseen, but a worker dies in a job, which a bake's take longer."""
    for process in getattr(pool, "_pool", ()):  # multiprocessing.Pool's list of its current workers
        started.setdefault(process.pid, process)
    for pid, process in started.items():
        code = process.exitcode
        if code is not None:
            raise_if_stopped()  # the workers ended with this process's own stop (a signal to the whole group)
            if code < 0:
                how = f"killed by {_signal_name(-code)}"
            elif code > 128:  # a SIGTERM unwinds a worker as SystemExit(128 + SIGTERM)
                how = f"exit code {code}, stopped by {_signal_name(code - 128)}"
            else:
                how = f"exit code {code}"
            oom = " (SIGKILL is what the kernel's out-of-memory killer sends)" if code == -signal.SIGKILL else ""
            raise WorkerDiedError(
                f"a worker process (pid {pid}) ended, {how}{oom}, while jobs were running; the job it held is "
                "lost. What finished is kept: run the command again, with fewer workers if memory ran out"
            )
