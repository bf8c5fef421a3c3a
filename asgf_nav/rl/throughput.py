"""A warning for the one slowdown a CPU run cannot explain from its own log: another busy process on its cores.

torch splits each operation between its CPU threads and waits for all of them, spinning. When another process
holds one of the cores, every operation waits for a thread that is not running: beside one busy process on
two cores, two-thread training ran 40 times slower (3 against 122 frames/s) where one thread kept 77
(docs/results.md, heard task). The run's log then shows only a collapsed frames/s, so the trainer says why.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SharedCoreWatch:
    """Flags a CPU run whose frames/s stays below ``1 / slowdown`` of its best for ``patience`` updates in a
    row (once per run: a warning per update would bury the log). Updates shorter than ``min_seconds`` (a
    test's tiny ones) are too noisy to judge and are not counted."""

    slowdown: float = 5.0
    patience: int = 3
    min_seconds: float = 0.5
    best: float = 0.0
    slow_updates: int = 0
    warned: bool = False

    def observe(self, fps: float, seconds: float, threads: int, on_cpu: bool) -> str | None:
        """The warning to log after an update of ``fps`` frames/s that took ``seconds``, or None."""
        if not on_cpu or threads < 2 or self.warned or seconds < self.min_seconds:  # one thread waits for no other
            return None
        self.best = max(self.best, fps)
        self.slow_updates = self.slow_updates + 1 if fps * self.slowdown < self.best else 0
        if self.slow_updates < self.patience:
            return None
        self.warned = True
        return (
            f"training slowed from {self.best:.0f} to {fps:.0f} frames/s over the last {self.slow_updates} updates, "
            f"with {threads} torch threads on the CPU: another busy process on these cores makes torch's threads "
            "wait for one another (beside one busy process on two cores, two threads measured 3 frames/s and one "
            "thread 77, against 122 for two threads alone; docs/results.md). Give the run the cores to itself, or "
            "stop it and resume it with train.torch_threads=1"
        )
