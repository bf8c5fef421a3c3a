"""SIGTERM and Ctrl-C end a run cleanly, and a training loop first saves what it has learned.

Outside a :func:`stop_between_updates` block the handlers raise at once (``SystemExit(128 + SIGTERM)``,
``KeyboardInterrupt`` for SIGINT), so ``finally`` blocks run and the background scene build stops.

Inside the block (the trainer's update loop) the first signal is only recorded: the
loop finishes its update, saves a checkpoint and then raises, so an interrupted run loses nothing and
``--resume`` continues from there. A second signal raises at once, for when that update takes too long;
but a SIGTERM within half a second of the first is the same stop delivered twice (Slurm signals every
process of a job step, and torchrun passes its own on to its workers), which must not cut the save short.

Python drops an exception raised while it is inside a ``__del__`` or a weakref callback ("Exception
ignored in ..."), and a library's bare ``except`` can swallow it too; so the handlers always remember
the signal, and long loops call :func:`raise_if_stopped` at safe points to raise it again.

A few standard-library calls are not safe to interrupt at all: ``Popen.poll()`` takes a lock just before
its ``try``, and an exception raised between the two leaves the lock taken, so every later ``wait()`` on
that child spins until its timeout. Such calls run inside :func:`uninterrupted`, which holds a signal
until the call is done and raises it then.

The handler never logs: it runs between two bytecodes of whatever the main thread was doing, which may be
a log handler half-way through writing to the same file ("reentrant call inside BufferedWriter"). Its
notice goes straight to file descriptor 2 instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)
_received: int | None = None  # the first stop signal received, if any
_received_at = 0.0  # its time.monotonic()
REPEAT_WINDOW_S = 0.5  # a SIGTERM this soon after the first one repeats it
_deferring = False  # inside stop_between_updates: the first signal waits for the loop's safe point
_deferred = False  # the first signal was recorded without raising
_shielded = 0  # depth of uninterrupted() blocks
_held: int | None = None  # a signal that arrived inside one, raised when it ends


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _on_signal(signum: int, frame: Any) -> None:
    global _received, _received_at, _deferred, _held
    first = _received is None
    now = time.monotonic()
    if not first and signum == _received == signal.SIGTERM and now - _received_at < REPEAT_WINDOW_S:
        return  # the same stop delivered twice: Slurm signals each process, and torchrun passes its own on
    if first:
        _received_at = now
    _received = _received or signum
    if first and _deferring:
        _deferred = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        _notify(f"{name}: stopping after this update and saving a checkpoint (send it again to stop at once)")
        return
    if _shielded:
        _held = signum
        return
    _raise_for(signum)


def _notify(message: str) -> None:
    """Write one line to stderr without Python's buffered streams, which the interrupted code may hold."""
    with contextlib.suppress(OSError):
        os.write(2, f"\n{message}\n".encode())


def install_stop_handlers() -> None:
    """Handle SIGTERM and SIGINT as above (main thread only, as for every Python signal handler), with no
    stop recorded yet: one from before belongs to an earlier run in this process (a notebook)."""
    _forget_stop()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


@contextlib.contextmanager
def stop_handling() -> Iterator[None]:
    """The stop handlers for one run: installed as it starts; as it ends, by a stop or not, the handlers
    from before are back and no stop stays recorded, so code run next in the same process is unaffected.
    Off the main thread (a run started from a worker thread) there are none: Python allows them only there."""
    if threading.current_thread() is not threading.main_thread():  # Python runs handlers there only
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    install_stop_handlers()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _forget_stop()


def _forget_stop() -> None:
    global _received, _deferred, _held
    _received, _deferred, _held = None, False, None


@contextlib.contextmanager
def stop_between_updates(enabled: bool = True) -> Iterator[None]:
    """Within this block the first stop signal is only recorded; the loop polls :func:`stop_requested`.

    Leaving the outermost block, by the stop's exception or not, clears the record: the stop has been
    acted on, and a run started again in the same process (a notebook) must not stop at its first check."""
    global _deferring
    previous = _deferring
    _deferring = enabled
    try:
        yield
    finally:
        _deferring = previous
        if not previous:
            _forget_stop()


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold a stop signal that arrives inside this block and raise it as the block ends (keep it short: a
    second Ctrl-C waits for it too). Only this module's handlers hold; Python's default SIGINT does not."""
    global _shielded, _held
    _shielded += 1
    try:
        yield
    finally:
        _shielded -= 1
        if not _shielded and _held is not None:
            signum, _held = _held, None
            _raise_for(signum)


def stop_requested() -> bool:
    """True once a SIGTERM or SIGINT has been received."""
    return _received is not None


def raise_if_stopped() -> None:
    """Raise for a SIGTERM or SIGINT received earlier: a deferred one, or one whose exception got lost."""
    if _received is None:
        return
    if not _deferred:
        logger.warning("signal %d was received but its exception got lost; stopping now", _received)
    _raise_for(_received)
