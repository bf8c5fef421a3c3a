"""SIGTERM and Ctrl-C end a run cleanly, even when the exception they raise gets lost.

The handlers raise at once (``SystemExit(128 + SIGTERM)``, ``KeyboardInterrupt`` for SIGINT), so
``finally`` blocks run: the background scene build stops, and the checkpoints already written stay for
``--resume``. Python drops an exception raised while it is inside a ``__del__`` or a weakref callback
("Exception ignored in ..."), and a library's bare ``except`` can swallow it too; so the handlers also
remember the signal, and long loops call :func:`raise_if_stopped` at safe points to raise it again.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

logger = logging.getLogger(__name__)
_received: int | None = None


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _on_signal(signum: int, frame: Any) -> None:
    global _received
    _received = signum
    _raise_for(signum)


def install_stop_handlers() -> None:
    """Handle SIGTERM and SIGINT as above (main thread only, as for every Python signal handler)."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def raise_if_stopped() -> None:
    """Raise again for a SIGTERM or SIGINT received earlier whose first exception did not end the run."""
    if _received is not None:
        logger.warning("signal %d was received but its exception got lost; stopping now", _received)
        _raise_for(_received)
