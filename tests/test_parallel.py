"""Bake pools: every result arrives, and workers exit without leaking semaphores."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import multiprocessing
    import time
    from multiprocessing import util

    from asgf_nav.parallel import spawn_imap_unordered

    LOCKS = []

    def job(i):
        # A named semaphore, as tqdm's write lock is in a spawned worker, and a slow exit (as a worker
        # holding a scene has): a worker terminated while it exits never releases the semaphore.
        if not LOCKS:
            LOCKS.append(multiprocessing.get_context("spawn").Lock())
            util.Finalize(None, time.sleep, args=(1.0,), exitpriority=100)
        return i * i

    if __name__ == "__main__":
        print(sorted(spawn_imap_unordered(job, range(6), 2)))
    """
)


def test_spawned_workers_exit_cleanly(tmp_path: Path) -> None:
    script = tmp_path / "pool_job.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([i * i for i in range(6)])
    assert "leaked semaphore" not in done.stderr, done.stderr
