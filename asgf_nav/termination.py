"""SIGTERM ends a run cleanly, even when the exit it raises gets lost.

The handler raises ``SystemExit(128 + SIGTERM)`` at once, so ``finally`` blocks run (the background
scene build stops; checkpoints already written stay, a later run resumes from them). Python drops an
exception raised while it is inside a ``__del__`` or a weakref callback ("Exception ignored in ..."),
and a library's bare ``except`` can swallow it too; so the handler also remembers the signal, and long
loops call :func:`raise_if_terminated` at safe points to raise the exit again.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

logger = logging.getLogger(__name__)
_received: int | None = None


def _on_sigterm(signum: int, frame: Any) -> None:
    global _received
    _received = signum
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """Install the handler (main thread only, as for every Python signal handler)."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def raise_if_terminated() -> None:
    """Raise the exit of a SIGTERM received earlier whose first ``SystemExit`` did not end the run."""
    if _received is not None:
        logger.warning("signal %d was received but its exit got lost; exiting now", _received)
        raise SystemExit(128 + _received)
